"""`fedsynth certs`: CA, SuperLink TLS certificate, per-site node-auth and signing keys."""

from __future__ import annotations

import ipaddress
import stat

import pytest

from fedsynth.cli import main
from fedsynth.errors import ConfigError
from fedsynth.federation.certs import provision


def test_provision_writes_a_usable_key_set(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    res = provision(tmp_path, ["site-a", "site-b"])
    ca = x509.load_pem_x509_certificate(res.ca_cert.read_bytes())
    srv = x509.load_pem_x509_certificate(res.server_cert.read_bytes())
    # server certificate is signed by the CA and names 127.0.0.1 and localhost
    ca.public_key().verify(srv.signature, srv.tbs_certificate_bytes, ec.ECDSA(srv.signature_hash_algorithm))
    san = srv.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert [s.site for s in res.sites] == ["site-a", "site-b"]
    for s in res.sites:
        assert s.supernode_public.read_text().startswith("ecdsa-sha2-nistp384 ")
        assert b"OPENSSH PRIVATE KEY" in s.supernode_private.read_bytes()
        for priv in (s.supernode_private, s.signing_private, res.ca_key, res.server_key):
            assert stat.S_IMODE(priv.stat().st_mode) == 0o600
        assert s.registered_public.read_bytes() == s.signing_public.read_bytes()


def test_signing_keys_sign_and_the_registry_verifies(tmp_path):
    from fixtures.images import smooth_noise

    from fedsynth.privacy import load_private_key, load_public_key

    res = provision(tmp_path, 1)
    s = res.sites[0]
    msg = smooth_noise(1, 8).tobytes()
    sig = load_private_key(s.signing_private).sign(msg)
    load_public_key(s.registered_public).verify(sig, msg)  # raises if the registry key is not the site's


def test_existing_ca_is_not_silently_replaced(tmp_path, capsys):
    provision(tmp_path, 1)
    with pytest.raises(ConfigError, match="already holds a CA"):
        provision(tmp_path, 1)
    assert main(["certs", "--out", str(tmp_path), "--sites", "1"]) == 2
    assert "already holds a CA" in capsys.readouterr().err
    assert main(["certs", "--out", str(tmp_path), "--sites", "2", "--force"]) == 0
