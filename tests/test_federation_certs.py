"""Key material made where it is used: the coordinator's CA and registry, each site's own keys, enrolment."""

from __future__ import annotations

import ipaddress
import stat

import pytest

from fedsynth.cli import main
from fedsynth.errors import ConfigError
from fedsynth.federation.certs import enrol, make_site_keys, provision


def test_provision_writes_the_coordinators_material_and_no_site_key(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    res = provision(tmp_path)
    ca = x509.load_pem_x509_certificate(res.ca_cert.read_bytes())
    srv = x509.load_pem_x509_certificate(res.server_cert.read_bytes())
    # server certificate is signed by the CA and names 127.0.0.1 and localhost
    ca.public_key().verify(srv.signature, srv.tbs_certificate_bytes, ec.ECDSA(srv.signature_hash_algorithm))
    san = srv.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    for priv in (res.ca_key, res.server_key):
        assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert res.registry.is_dir() and not list(res.registry.iterdir())
    made = {p.name for p in tmp_path.rglob("*") if p.is_file()}
    assert not {"site.key", "supernode"} & made  # no site's private key is ever made at the coordinator


def test_site_keys_are_made_at_the_site_and_only_public_halves_enrol(tmp_path):
    from fixtures.images import smooth_noise

    from fedsynth.privacy import load_private_key, load_public_key

    k = make_site_keys(tmp_path / "site-a")
    assert k.supernode_public.read_text().startswith("ecdsa-sha2-nistp384 ")
    assert b"OPENSSH PRIVATE KEY" in k.supernode_private.read_bytes()
    for priv in (k.supernode_private, k.signing_private):
        assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    registry = provision(tmp_path / "coord").registry
    dest = enrol(registry, "site-a", k.signing_public, "sha256:" + "ab" * 32)
    msg = smooth_noise(1, 8).tobytes()
    load_public_key(dest).verify(load_private_key(k.signing_private).sign(msg), msg)  # the registry key is the site's
    assert (registry / "site-a.policy").read_text() == "sha256:" + "ab" * 32
    with pytest.raises(ConfigError, match="already holds this site's keys"):
        make_site_keys(tmp_path / "site-a")
    other = make_site_keys(tmp_path / "site-b")
    with pytest.raises(ConfigError, match="already enrolled with another signing key"):
        enrol(registry, "site-a", other.signing_public)
    with pytest.raises(ConfigError, match="not a site id"):
        enrol(registry, "../escape", other.signing_public)
    with pytest.raises(ConfigError):
        enrol(registry, "site-c", k.supernode_public)  # not an Ed25519 signing key


def test_existing_ca_is_not_silently_replaced_and_the_cli_says_so(tmp_path, capsys):
    provision(tmp_path)
    with pytest.raises(ConfigError, match="already holds a CA"):
        provision(tmp_path)
    assert main(["certs", "--out", str(tmp_path)]) == 2
    assert "already holds a CA" in capsys.readouterr().err
    assert main(["certs", "--out", str(tmp_path), "--force"]) == 0
    assert main(["site-keys", "--out", str(tmp_path / "s")]) == 0
    assert main(["enrol", "--registry", str(tmp_path / "coordinator" / "site-keys"), "--site", "site-1",
                 "--signing-key", str(tmp_path / "s" / "signing" / "site.pub")]) == 0
    assert (tmp_path / "coordinator" / "site-keys" / "site-1.pub").is_file()
