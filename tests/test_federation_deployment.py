"""Deployment Engine on 127.0.0.1: TLS, SuperNode authentication, two sites, a tiny study (slow)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("flower-superlink") is None, reason="flwr CLI not installed")
def test_superlink_two_supernodes_tls_auth_tiny_study(tmp_path):
    res = subprocess.run([str(REPO / "server" / "smoke-deploy.sh"), str(tmp_path / "w"),
                          str(REPO / "simulations" / "tiny.toml"), "8170"],
                         cwd=REPO, capture_output=True, text=True, timeout=900)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "unregistered SuperNode refused" in out
    assert "deployment smoke OK" in out
    study = tmp_path / "w" / "study"
    db = sqlite3.connect(study / "pool" / "manifest.sqlite")
    assert {r[0] for r in db.execute("SELECT site FROM images")} == {"site-1", "site-2"}
    rep = json.loads((study / "report.json").read_text())
    assert rep["mode"] == "deployment" and "centralised-real" not in rep["methods"]
    for k in (1, 2):  # each certificate carries the policy digest its site registered
        registered = (tmp_path / "w" / "keys" / "coordinator" / "site-keys" / f"site-{k}.policy").read_text()
        assert rep["privacy"][f"site-{k}"]["policy_digest"] == registered.strip()
