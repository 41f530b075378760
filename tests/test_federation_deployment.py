"""Deployment Engine on 127.0.0.1 behind the front door, attacked and then used (slow).

``server/smoke-deploy.sh`` does the work: TLS, SuperNode authentication, the nginx
front door, the signed app package; an unregistered SuperNode, an outsider holding
only ``ca.crt`` (register, ls, run), a registered site calling Control routes, an
unsigned and a foreign-signed run; then the signed tiny study. The script exits
non-zero on the first attack that is not refused.
"""

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
@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx not installed (apt-get install nginx)")
def test_attacks_fail_and_the_signed_study_runs_behind_the_front_door(tmp_path):
    res = subprocess.run([str(REPO / "server" / "smoke-deploy.sh"), str(tmp_path / "w"),
                          str(REPO / "simulations" / "tiny.toml"), "8170"],
                         cwd=REPO, capture_output=True, text=True, timeout=900)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "unregistered SuperNode refused" in out
    assert "outsider: register, ls, run refused at the front door" in out
    assert "non-Fleet requests answered 404 by nginx" in out
    assert "unsigned and foreign-signed runs refused by both sites" in out
    assert "deployment smoke OK" in out
    study = tmp_path / "w" / "study"
    db = sqlite3.connect(study / "pool" / "manifest.sqlite")
    assert {r[0] for r in db.execute("SELECT site FROM images")} == {"site-1", "site-2"}
    rep = json.loads((study / "report.json").read_text())
    assert rep["mode"] == "deployment" and "centralised-real" not in rep["methods"]
    for k in (1, 2):  # each certificate carries the policy digest its site registered
        registered = (tmp_path / "w" / "keys" / "coordinator" / "site-keys" / f"site-{k}.policy").read_text()
        assert rep["privacy"][f"site-{k}"]["policy_digest"] == registered.strip()
