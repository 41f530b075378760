"""Key material for the Deployment Engine, each piece made where it is used.

Three kinds of key material, each protecting something different (see
``docs/architecture.md``):

- a private CA and the SuperLink's TLS server certificate (SAN ``127.0.0.1``,
  ``localhost`` and any extra names), made at the coordinator
  (:func:`provision`), so SuperNodes and the ``flwr`` CLI can check they talk
  to the real coordinator and the channel is encrypted;
- each site's SuperNode authentication key (EC P-384, OpenSSH format) and its
  Ed25519 certificate-signing key, made *at the site* (:func:`make_site_keys`,
  ``fedsynth site-keys``): private halves never leave it;
- the coordinator's enrolment registry (:func:`enrol`, ``fedsynth enrol``):
  the public halves a site hands over out of band — its signing key
  (``<site>.pub``) and its policy digest (``<site>.policy``); its SuperNode
  key is registered with ``flwr supernode register ... --name <site>``, and
  that registered name is the site's identity in a study.

Layouts::

    coordinator:  ca.crt  ca.key  server.pem  server.key  coordinator/site-keys/<site>.pub|.policy
    site:         supernode  supernode.pub  signing/site.key  signing/site.pub

Private keys are written ``0600``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from fedsynth.errors import ConfigError
from fedsynth.io_utils import write_bytes_atomic

__all__ = ["Provisioned", "SiteKeys", "enrol", "make_ca", "make_server_cert", "make_site_keys", "make_supernode_key",
           "provision"]

log = logging.getLogger(__name__)

_VALID_DAYS = 825


@dataclass(frozen=True)
class SiteKeys:
    """Key files a site made for itself (private halves stay there)."""

    site_dir: Path
    supernode_private: Path
    supernode_public: Path
    signing_private: Path
    signing_public: Path


@dataclass(frozen=True)
class Provisioned:
    """What :func:`provision` wrote at the coordinator."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    registry: Path


def _write_private(path: Path, data: bytes) -> None:
    write_bytes_atomic(path, data)
    os.chmod(path, 0o600)


def _pem_key(key) -> bytes:  # noqa: ANN001 - any cryptography private key
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(out: Path, common_name: str = "fedsynth study CA") -> tuple[Path, Path]:
    """Create a self-signed CA (EC P-384); returns ``(ca.crt, ca.key)``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    crt, kf = out / "ca.crt", out / "ca.key"
    write_bytes_atomic(crt, cert.public_bytes(serialization.Encoding.PEM))
    _write_private(kf, _pem_key(key))
    return crt, kf


def make_server_cert(
    out: Path, ca_cert: Path, ca_key: Path, names: tuple[str, ...] = ("127.0.0.1", "localhost")
) -> tuple[Path, Path]:
    """Issue the SuperLink's TLS certificate signed by the CA; returns ``(server.pem, server.key)``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    ca_priv = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP384R1())
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_priv.public_key()), critical=False
        )
        .sign(ca_priv, hashes.SHA384())
    )
    crt, kf = out / "server.pem", out / "server.key"
    write_bytes_atomic(crt, cert.public_bytes(serialization.Encoding.PEM))
    _write_private(kf, _pem_key(key))
    return crt, kf


def make_supernode_key(path: Path) -> tuple[Path, Path]:
    """EC P-384 SuperNode authentication key pair in OpenSSH format; returns ``(priv, pub)``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    priv = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    _write_private(path, priv)
    pub_path = path.with_name(path.name + ".pub")
    write_bytes_atomic(pub_path, pub + b"\n")
    return path, pub_path


def provision(
    out: str | Path,
    server_names: tuple[str, ...] = ("127.0.0.1", "localhost"),
    force: bool = False,
) -> Provisioned:
    """The coordinator's CA, SuperLink certificate and (empty) enrolment registry under ``out``.

    Refuses to overwrite an existing CA unless ``force`` (re-keying a running
    study silently would lock every site out). No site key is made here.
    """
    out = Path(out)
    if (out / "ca.key").exists() and not force:
        raise ConfigError(f"{out}: already holds a CA (ca.key); use --force to replace it")
    out.mkdir(parents=True, exist_ok=True)
    ca_crt, ca_key = make_ca(out)
    srv_crt, srv_key = make_server_cert(out, ca_crt, ca_key, server_names)
    registry = out / "coordinator" / "site-keys"
    registry.mkdir(parents=True, exist_ok=True)
    return Provisioned(ca_crt, ca_key, srv_crt, srv_key, registry)


def make_site_keys(out: str | Path, force: bool = False) -> SiteKeys:
    """A site's own SuperNode key and signing key under ``out`` (run at the site).

    Refuses to overwrite existing keys unless ``force``: a site that re-keys
    must enrol its new public halves again.
    """
    from fedsynth.privacy import generate_site_key

    out = Path(out)
    if (out / "supernode").exists() and not force:
        raise ConfigError(f"{out}: already holds this site's keys; use --force to replace them (then enrol again)")
    out.mkdir(parents=True, exist_ok=True)
    node_priv, node_pub = make_supernode_key(out / "supernode")
    sign_priv, sign_pub = generate_site_key(out / "signing", overwrite=force)
    return SiteKeys(out, node_priv, node_pub, Path(sign_priv), Path(sign_pub))


def enrol(registry: str | Path, site_id: str, signing_public: str | Path, policy_digest: str | None = None) -> Path:
    """Register a site's public signing key (and policy digest) in the coordinator's registry.

    The key must be a readable Ed25519 public key and the id a site id; an
    already enrolled site with a *different* key is refused (re-enrolment is
    a deliberate act: remove the old key first). Returns the key's registry path.
    """
    from fedsynth.federation.study_dir import policy_file, registered_key
    from fedsynth.privacy import load_public_key, public_key_id

    key = load_public_key(Path(signing_public))  # one-line ConfigError when it is not one
    dest = registered_key(Path(registry), site_id)
    if dest.exists() and public_key_id(load_public_key(dest)) != public_key_id(key):
        raise ConfigError(f"{site_id} is already enrolled with another signing key ({dest}); remove it first")
    write_bytes_atomic(dest, Path(signing_public).read_bytes())
    if policy_digest is not None:
        if not policy_digest.startswith("sha256:") or len(policy_digest) != 71:
            raise ConfigError(f"not a policy digest: {policy_digest[:20]!r} (expected sha256:<64 hex>)")
        write_bytes_atomic(policy_file(Path(registry), site_id), policy_digest.encode())
    log.info("enrolled %s: %s", site_id, dest)
    return dest
