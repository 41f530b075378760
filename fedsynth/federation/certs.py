"""Provisioning for the Deployment Engine: CA, SuperLink certificate, per-site keys.

Three kinds of key material, each protecting something different (see
``docs/architecture.md``):

- a private CA and the SuperLink's TLS server certificate (SAN ``127.0.0.1``,
  ``localhost`` and any extra names) so SuperNodes and the ``flwr`` CLI can
  check they talk to the real coordinator and the channel is encrypted;
- per-site SuperNode authentication keys (EC P-384, OpenSSH format), whose
  public halves the coordinator registers with ``flwr supernode register``,
  so only enrolled hospitals can join;
- per-site Ed25519 certificate-signing keys (made by the privacy gate's
  :func:`fedsynth.privacy.generate_site_key`): the site signs every
  publication certificate, the coordinator verifies against the registered
  public key before an image enters the pool.

Layout written under ``out``::

    ca.crt  ca.key  server.pem  server.key
    sites/<site>/supernode  sites/<site>/supernode.pub      # node auth
    sites/<site>/signing/...                                  # gate keys (private stays at the site)
    coordinator/site-keys/<site>.pub                          # what the coordinator registers

Private keys are written ``0600``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from fedsynth.errors import ConfigError
from fedsynth.io_utils import write_bytes_atomic

__all__ = ["Provisioned", "SiteKeys", "make_ca", "make_server_cert", "make_supernode_key", "provision"]

log = logging.getLogger(__name__)

_VALID_DAYS = 825


@dataclass(frozen=True)
class SiteKeys:
    """Key files of one site."""

    site: str
    supernode_private: Path
    supernode_public: Path
    signing_private: Path
    signing_public: Path
    registered_public: Path


@dataclass(frozen=True)
class Provisioned:
    """Everything :func:`provision` wrote."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    sites: tuple[SiteKeys, ...]


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


def site_name(index: int) -> str:
    """Canonical site id for 1-based ``index``."""
    return f"site-{index}"


def provision(
    out: str | Path,
    sites: int | list[str],
    server_names: tuple[str, ...] = ("127.0.0.1", "localhost"),
    force: bool = False,
) -> Provisioned:
    """Create the CA, server certificate and every site's keys under ``out``.

    Refuses to overwrite an existing CA unless ``force`` (re-keying a running
    study silently would lock every site out).
    """
    from fedsynth.privacy import generate_site_key

    out = Path(out)
    names = [site_name(i + 1) for i in range(sites)] if isinstance(sites, int) else list(sites)
    if not names:
        raise ConfigError("certs: --sites must be at least 1")
    if (out / "ca.key").exists() and not force:
        raise ConfigError(f"{out}: already holds a CA (ca.key); use --force to replace it")
    out.mkdir(parents=True, exist_ok=True)
    ca_crt, ca_key = make_ca(out)
    srv_crt, srv_key = make_server_cert(out, ca_crt, ca_key, server_names)
    site_keys = []
    registry = out / "coordinator" / "site-keys"
    registry.mkdir(parents=True, exist_ok=True)
    for name in names:
        sdir = out / "sites" / name
        sdir.mkdir(parents=True, exist_ok=True)
        node_priv, node_pub = make_supernode_key(sdir / "supernode")
        sign_priv, sign_pub = generate_site_key(sdir / "signing", overwrite=force)
        os.chmod(sign_priv, 0o600)
        reg = registry / f"{name}.pub"
        shutil.copyfile(sign_pub, reg)
        site_keys.append(SiteKeys(name, node_priv, node_pub, Path(sign_priv), Path(sign_pub), reg))
        log.info("certs: keys for %s in %s", name, sdir)
    return Provisioned(ca_crt, ca_key, srv_crt, srv_key, tuple(site_keys))
