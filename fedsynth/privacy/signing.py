"""Site keys, and signing / verifying publication certificates (Ed25519).

The certificate is serialised canonically (sorted keys, no whitespace, no
NaN) before signing, so any party re-serialising the same content gets the
same bytes. It binds the published images through their sha256 digests:
verification fails if one byte of the certificate or of any image changes,
if an image is added, dropped or reordered, or if the key is not the site's.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from fedsynth.errors import ConfigError, GateError
from fedsynth.io_utils import write_bytes_atomic

__all__ = [
    "canonical_json",
    "generate_site_key",
    "image_digest",
    "load_private_key",
    "load_public_key",
    "public_key_id",
    "sign_certificate",
    "verify_certificate",
]

FORMAT = "fedsynth-gate-certificate/1"


def canonical_json(obj: Any) -> bytes:
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except ValueError as err:
        raise GateError(f"certificate is not canonical JSON: {err}") from None


def image_digest(image: np.ndarray) -> str:
    """sha256 over the image's shape and little-endian float32 bytes."""
    arr = np.ascontiguousarray(image, dtype="<f4")
    h = hashlib.sha256(repr(tuple(arr.shape)).encode())
    h.update(arr.tobytes())
    return h.hexdigest()


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


def sign_certificate(certificate: dict[str, Any], private_key: Any) -> dict[str, Any]:
    """``{"certificate", "signature" (base64), "algorithm", "key_id"}``."""
    sig = private_key.sign(canonical_json(certificate))
    return {"certificate": certificate, "signature": base64.b64encode(sig).decode("ascii"),
            "algorithm": "ed25519", "key_id": public_key_id(private_key.public_key())}


def verify_certificate(signed: Any, public_key: Any, images: np.ndarray) -> dict[str, Any]:
    """Check signature, image binding and internal consistency; return the certificate or raise GateError."""
    from cryptography.exceptions import InvalidSignature

    if not isinstance(signed, dict) or not isinstance(signed.get("certificate"), dict):
        raise GateError("not a signed certificate (no 'certificate' object)")
    sig = signed.get("signature")
    if not isinstance(sig, str) or not sig:
        raise GateError("certificate is not signed")
    if signed.get("algorithm", "ed25519") != "ed25519":
        raise GateError(f"unsupported signature algorithm {signed.get('algorithm')!r}")
    cert = signed["certificate"]
    key = load_public_key(public_key)
    try:
        key.verify(base64.b64decode(sig, validate=True), canonical_json(cert))
    except (InvalidSignature, ValueError):
        raise GateError("signature does not verify: the certificate was altered or signed by another key") from None
    if cert.get("format") != FORMAT:
        raise GateError(f"unknown certificate format {cert.get('format')!r}")
    _check_consistency(cert)
    images = np.asarray(images)
    digests = cert["published"]
    if images.ndim != 3 or len(images) != len(digests):
        raise GateError(f"{len(images) if images.ndim == 3 else 'malformed'} images for "
                        f"{len(digests)} certified digests")
    for i, (img, d) in enumerate(zip(images, digests, strict=True)):
        if image_digest(img) != d:
            raise GateError(f"image {i} does not match its certified digest")
    return cert


def _check_consistency(cert: dict[str, Any]) -> None:
    """Every published image was accepted, and every accepted one clears every threshold (plus the stated margin)."""
    try:
        margin = cert.get("acceptance_margin", {"relative": 0.0, "absolute": 0.0})  # absent: older certificates
        thresholds = {m: float(v["threshold"]) * (1.0 + float(margin["relative"])) + float(margin["absolute"])
                      for m, v in cert["metrics"].items()}
        candidates = cert["images"]
        published = cert["published"]
        accepted = [c for c in candidates if c["accepted"]]
        if [c["digest"] for c in accepted] != published:
            raise GateError("published digests do not match the accepted candidates")
        required = bool(cert.get("companions", {}).get("required", False))  # absent: older certificates
        for c in candidates:
            if required and "nn_distance_companion" not in c:
                raise GateError("the certificate requires companions but a candidate has no companion distance")
            ok = all(float(c["nn_distance"][m]) >= t for m, t in thresholds.items())
            if "nn_distance_companion" in c:
                ok = ok and all(float(c["nn_distance_companion"][m]) >= t for m, t in thresholds.items())
            if bool(c["accepted"]) != ok:
                raise GateError("a candidate's accepted flag contradicts its distances and the thresholds")
        if cert["summary"]["n_published"] != len(published):
            raise GateError("summary count does not match the published images")
    except (KeyError, TypeError, ValueError) as err:
        raise GateError(f"malformed certificate ({type(err).__name__}: {err})") from None
