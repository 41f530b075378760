"""Site keys, and signing / verifying publication certificates (Ed25519).

The certificate body is serialised with the JSON Canonicalization Scheme
(RFC 8785, the ``rfc8785`` package) before signing, so any party, in any
language, re-serialising the same content gets the same bytes. It binds the
published images through their sha256 digests
(:func:`fedsynth.digests.array_digest`, public as ``fedsynth.privacy.image_digest``):
verification fails if one byte of the certificate or of any image changes,
if an image is added, dropped or reordered, or if the key is not the site's.

A certificate published into a study also carries its :class:`Binding` inside
the signed body — the site, the study, the coordinator's request nonce, the
site's policy digest, the signing algorithm and key id — so it cannot be
replayed into another study or passed off under another key; the verifier
checks each against what it expects (:class:`Expected`).
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsynth.digests import array_digest
from fedsynth.errors import ConfigError, GateError
from fedsynth.io_utils import write_bytes_atomic
from fedsynth.privacy.certificate import Binding, Certificate, SignedCertificate, parse_certificate

__all__ = [
    "Expected",
    "canonical_json",
    "generate_site_key",
    "load_private_key",
    "load_public_key",
    "public_key_id",
    "sign_certificate",
    "verify_certificate",
    "verify_signature",
]



def canonical_json(obj: Any) -> bytes:
    """RFC 8785 canonical JSON of ``obj`` (sorted keys, no whitespace, ECMAScript numbers, UTF-8); no NaN."""
    import rfc8785

    try:
        return rfc8785.dumps(obj)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as err:
        raise GateError(f"certificate is not canonical JSON: {err}") from None


@dataclass(frozen=True)
class Expected:
    """What a verifier requires of a certificate's binding; ``None`` fields are not checked.

    ``policy_digest`` is the site's policy digest registered with the
    coordinator (out of band, like the public key), when there is one.
    """

    site_id: str
    study_id: str
    nonce: str
    policy_digest: str | None = None


def generate_site_key(directory: str | Path, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``site.key`` (PKCS#8 PEM, mode 0600) and ``site.pub`` into ``directory``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    directory = Path(directory)
    priv_path, pub_path = directory / "site.key", directory / "site.pub"
    if priv_path.exists() and not overwrite:
        raise ConfigError(f"{priv_path}: a signing key already exists; refusing to overwrite it")
    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    write_bytes_atomic(priv_path, pem)
    os.chmod(priv_path, 0o600)
    write_bytes_atomic(pub_path, pub)
    return priv_path, pub_path


def load_private_key(path: str | Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError(f"{path}: not a readable unencrypted PEM private key ({type(err).__name__})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: expected an Ed25519 private key")
    return key


def load_public_key(source: str | Path | bytes | Any) -> Any:
    """A public key from a PEM file path, PEM bytes, or a key object."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if isinstance(source, Ed25519PublicKey):
        return source
    where = "public key"
    try:
        if isinstance(source, bytes):
            data = source
        else:
            where = str(source)
            data = Path(source).read_bytes()
        key = serialization.load_pem_public_key(data)
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError(f"{where}: not a readable PEM public key ({type(err).__name__})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{where}: expected an Ed25519 public key")
    return key


def public_key_id(public_key: Any) -> str:
    """sha256 of the raw public key bytes: names the signer without revealing anything."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def sign_certificate(
    certificate: Certificate | dict[str, Any],
    private_key: Any,
    *,
    site_id: str | None = None,
    study_id: str | None = None,
    nonce: str | None = None,
    policy_digest: str | None = None,
) -> SignedCertificate:
    """Sign a certificate body (:meth:`Certificate.body`, or a raw body) with the site's key.

    With ``site_id``/``study_id``/``nonce``/``policy_digest`` the body gets a
    :class:`Binding` (with this key's id and the algorithm) before signing.
    A raw dict is signed as it is: that is how a tampered or hand-made
    certificate is produced in tests, and verification then judges it.
    """
    key_id = public_key_id(private_key.public_key())
    if isinstance(certificate, Certificate):
        if site_id is not None:
            binding = Binding(site_id=site_id, study_id=str(study_id), nonce=str(nonce),
                              policy_digest=str(policy_digest), key_id=key_id, algorithm="ed25519")
            certificate = certificate.model_copy(update={"binding": binding})
        body = certificate.body()
    else:
        body = certificate
    sig = private_key.sign(canonical_json(body))
    return SignedCertificate(certificate=body, signature=base64.b64encode(sig).decode("ascii"),
                             algorithm="ed25519", key_id=key_id)


def verify_signature(signed: Any, public_key: Any) -> Certificate:
    """The signature over the body exactly as received, then the body as a consistent :class:`Certificate`.

    ``signed`` is untrusted input (a :class:`SignedCertificate` or the dict
    that arrived). Raises :class:`GateError` (one line) on any failure. The
    images are not checked here (see :func:`verify_certificate`).
    """
    from cryptography.exceptions import InvalidSignature

    if isinstance(signed, SignedCertificate):
        signed = signed.model_dump(mode="json")
    if not isinstance(signed, dict) or not isinstance(signed.get("certificate"), dict):
        raise GateError("not a signed certificate (no 'certificate' object)")
    sig = signed.get("signature")
    if not isinstance(sig, str) or not sig:
        raise GateError("certificate is not signed")
    if signed.get("algorithm", "ed25519") != "ed25519":
        raise GateError(f"unsupported signature algorithm {signed.get('algorithm')!r}")
    body = signed["certificate"]
    key = load_public_key(public_key)
    try:
        key.verify(base64.b64decode(sig, validate=True), canonical_json(body))
    except (InvalidSignature, ValueError):
        raise GateError("signature does not verify: the certificate was altered or signed by another key") from None
    cert = parse_certificate(body)
    cert.check_consistency()
    return cert


def verify_certificate(
    signed: Any, public_key: Any, images: np.ndarray, expected: Expected | None = None
) -> Certificate:
    """Check signature, image binding and internal consistency; return the certificate or raise GateError.

    The signature is checked over the body as received (:func:`verify_signature`).
    With ``expected`` the body must carry a binding to that site, study and
    request nonce (and policy digest, when given), signed with this key.
    """
    if isinstance(signed, SignedCertificate):
        signed = signed.model_dump(mode="json")
    cert = verify_signature(signed, public_key)
    if expected is not None:
        _check_binding(cert, expected, load_public_key(public_key), signed)
    images = np.asarray(images)
    digests = cert.published
    if images.ndim != 3 or len(images) != len(digests):
        raise GateError(f"{len(images) if images.ndim == 3 else 'malformed'} images for "
                        f"{len(digests)} certified digests")
    for i, (img, d) in enumerate(zip(images, digests, strict=True)):
        if array_digest(img) != d:
            raise GateError(f"image {i} does not match its certified digest")
    return cert


def _check_binding(cert: Certificate, expected: Expected, public_key: Any, envelope: dict[str, Any]) -> None:
    """The signed binding names this site, study, request, policy and key; else GateError (a replay or a swap)."""
    b = cert.binding
    if b is None:
        raise GateError("certificate is not bound to a study (no site, study or nonce in the signed body)")
    checks = [("site id", b.site_id, expected.site_id), ("study id", b.study_id, expected.study_id),
              ("request nonce", b.nonce, expected.nonce), ("key id", b.key_id, public_key_id(public_key)),
              ("envelope key id", envelope.get("key_id"), b.key_id),
              ("envelope algorithm", envelope.get("algorithm", "ed25519"), b.algorithm)]
    if expected.policy_digest is not None:
        checks.append(("site policy digest", b.policy_digest, expected.policy_digest))
    for what, got, want in checks:
        if got != want:
            raise GateError(f"certificate {what} {str(got)[:24]!r} does not match the expected {str(want)[:24]!r} "
                            "(replayed from another study or request, or altered)")
