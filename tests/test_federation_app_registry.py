"""Signed app packages: what the coordinator signs, the SuperNode's own check accepts; nothing else.

The verifier here is Flower's: the SuperLink's hub client (``request_download_link``)
and the SuperNode's FAB check (``_verify_fab``), so a pass means a real SuperNode
started with ``--trusted-entities`` would run the package and a failure that it
would refuse it.
"""

from __future__ import annotations

import hashlib
import os
import stat
import textwrap
from pathlib import Path

import pytest
import requests
import yaml
from flwr.supercore.fab import Fab
from flwr.supercore.utils import request_download_link
from flwr.superlink.servicer.control.control_handlers import _format_verification
from flwr.supernode.start_client_internal import _verify_fab

from fedsynth.errors import ConfigError
from fedsynth.federation.app_registry import AppRegistry, make_app_key, sign_app, signed_apps


def _app(root: Path, version: str = "1.0.0", body: str = "") -> Path:
    """A minimal Flower app Flower's builder accepts."""
    (root / "demo_pkg").mkdir(parents=True, exist_ok=True)
    (root / "demo_pkg" / "__init__.py").write_text(f"VALUE = 1{body}\n")
    (root / "pyproject.toml").write_text(textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "demo"
        version = "{version}"
        [tool.flwr.app]
        publisher = "lab"
        [tool.flwr.app.components]
        serverapp = "demo_pkg:server"
        clientapp = "demo_pkg:client"
        [tool.flwr.app.config]
        x = 1
        """))
    return root


def _fetch(reg: AppRegistry, spec_version: str | None = "1.0.0", app_id: str = "@lab/demo") -> Fab:
    """What the SuperLink does for ``flwr run @lab/demo==<version>``."""
    url, verifications, _ = request_download_link(app_id, spec_version, f"{reg.url}/hub/fetch-fab", "fab_url")
    data = requests.get(url, timeout=10).content
    return Fab(hashlib.sha256(data).hexdigest(), data, _format_verification(verifications or []))


def _trusted(path: Path) -> dict[str, str]:
    return yaml.safe_load(path.read_text())


@pytest.fixture
def registry(tmp_path):
    (tmp_path / "reg_dir").mkdir()
    reg = AppRegistry(tmp_path / "reg_dir", port=0).start()
    yield reg
    reg.close()


def test_a_signed_package_verifies_with_the_sites_trusted_key_and_only_with_it(tmp_path, registry):
    priv, pub, trusted = make_app_key(tmp_path / "coord")
    _, _, other = make_app_key(tmp_path / "someone-else")
    assert stat.S_IMODE(os.stat(priv).st_mode) == 0o600
    app = sign_app(priv, registry.registry, app=_app(tmp_path / "app"))
    assert app.spec == "@lab/demo==1.0.0"
    fab = _fetch(registry)
    assert fab.hash_str == app.sha256
    assert _verify_fab(fab, _trusted(trusted)) is True
    assert _verify_fab(fab, _trusted(other)) is False  # a site trusting another key refuses it
    tampered = Fab(fab.hash_str, fab.content + b"\0", fab.verifications)
    assert _verify_fab(tampered, _trusted(trusted)) is False


def test_the_registry_binds_loopback_and_serves_nothing_unsigned(tmp_path, registry):
    assert registry.url.startswith("http://127.0.0.1:")
    with pytest.raises(ValueError, match="not found"):
        request_download_link("@lab/demo", "1.0.0", f"{registry.url}/hub/fetch-fab", "fab_url")
    assert requests.get(f"{registry.url}/fabs/{'0' * 64}.fab", timeout=10).status_code == 404
    assert requests.get(f"{registry.url}/../etc/passwd", timeout=10).status_code == 404
    r = requests.post(f"{registry.url}/hub/fetch-fab", data=b"{", timeout=10)
    assert r.status_code == 400


def test_a_version_names_one_package_and_cosigners_add_up(tmp_path, registry):
    k1, _, t1 = make_app_key(tmp_path / "k1")
    k2, _, t2 = make_app_key(tmp_path / "k2")
    root = _app(tmp_path / "app")
    first = sign_app(k1, registry.registry, app=root)
    second = sign_app(k2, registry.registry, fab=first.fab)  # a second party signs the same bytes
    assert len(second.verifications) == 2
    fab = _fetch(registry)
    assert _verify_fab(fab, _trusted(t1)) and _verify_fab(fab, _trusted(t2))
    _app(root, body="  # changed")
    with pytest.raises(ConfigError, match="already a different package"):
        sign_app(k1, registry.registry, app=root)
    _app(root, version="1.1.0", body="  # changed")
    sign_app(k1, registry.registry, app=root)
    assert [a.version for a in signed_apps(registry.registry)] == ["1.0.0", "1.1.0"]
    assert _fetch(registry, spec_version=None).content != fab.content  # "latest" is 1.1.0


def test_keys_are_not_overwritten_and_a_wrong_key_is_one_line(tmp_path):
    make_app_key(tmp_path / "k")
    with pytest.raises(ConfigError, match="already exists"):
        make_app_key(tmp_path / "k")
    (tmp_path / "bad.key").write_text("not a key")
    with pytest.raises(ConfigError, match="not a readable OpenSSH private key"):
        sign_app(tmp_path / "bad.key", tmp_path / "reg", app=_app(tmp_path / "app"))
