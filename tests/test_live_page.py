"""The live study page: what a person sees mid-study, read-only, on loopback, in a real browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from fixtures.federation import TINY_SCENARIO, signed_bundle

from fedsynth.federation.live_page import LivePage, study_status

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture()
def study_dir(tmp_path: Path) -> Path:
    """A study caught in its synthetic-pool phase: two phases done, site-3 gone, site-1's bundle pooled."""
    from fedsynth.config import load_toml
    from fedsynth.federation.config import ScenarioConfig
    from fedsynth.federation.pool import SyntheticPool
    from fedsynth.federation.study_dir import StudyLayout, StudySpec

    (tmp_path / "tiny.toml").write_text(TINY_SCENARIO)
    out = tmp_path / "study"
    layout = StudyLayout(out)
    spec = StudySpec(scenario=load_toml(tmp_path / "tiny.toml", ScenarioConfig), out=out, site_keys=layout.registry)
    out.mkdir()
    layout.spec.write_text(spec.model_dump_json())
    images, signed, pub, _ = signed_bundle(tmp_path / "keys")
    SyntheticPool(layout.pool).add_bundle("site-1", images, signed, pub)
    now = time.time()
    state = {
        "planned": ["setup", "train-generators", "publish", "synthetic-pool", "fedavg", "evaluation", "report"],
        "done": ["train-generators", "publish"],
        "wall_seconds": {"setup": 3.0, "train-generators": 100.0, "publish": 10.0},
        "started": {"setup": now - 160, "train-generators": now - 155, "publish": now - 55, "synthetic-pool": now - 42},
        "generators": {"site-1": "ab" * 32, "site-2": "cd" * 32, "site-3": "ef" * 32},
        "privacy": {"site-1": {"acceptance_rate": 0.75, "n_published": len(images)},
                    "site-2": {"status": "refused by the site's privacy policy"}},
        "missing": {"site-3": "timed out in publish"},
        "bytes": {"synthetic-pool": {"sent": 1000, "received": 250000}},
        "training": {"synthetic-pool": {"curve": [{"epoch": 2, "steps": 40, "val_psnr": 30.5, "bytes": 0},
                                                  {"epoch": 4, "steps": 80, "val_psnr": 31.25, "bytes": 0}]}},
    }
    layout.state.parent.mkdir(parents=True)
    layout.state.write_text(json.dumps(state))
    return out


def test_status_says_where_the_study_is(study_dir: Path) -> None:
    s = study_status(study_dir)
    states = {p["name"]: p["state"] for p in s["phases"]}
    assert states == {"setup": "done", "train-generators": "done", "publish": "done", "synthetic-pool": "running",
                      "fedavg": "waiting", "evaluation": "waiting", "report": "waiting"}
    running = next(p for p in s["phases"] if p["state"] == "running")
    assert 40 <= running["seconds"] < 100
    sites = {x["site"]: x for x in s["sites"]}
    assert sites["site-1"]["pooled"] == 6 and sites["site-1"]["certificate"] == "certificates/site-1"
    assert sites["site-3"]["state"].startswith("left the study") and sites["site-2"]["pooled"] == 0
    assert s["curves"]["synthetic-pool"][-1]["val_psnr"] == 31.25 and s["report"] is None


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - a loopback URL this test made
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_the_page_is_read_only_on_loopback_and_serves_certificates(study_dir: Path) -> None:
    page = LivePage(study_dir)
    url = page.start()
    try:
        assert url.startswith("http://127.0.0.1:")
        code, body = _get(url + "certificates/site-1")
        assert code == 200 and json.loads(body)["signature"]
        assert _get(url + "certificates/site-2")[0] == 404
        assert _get(url + "certificates/..%2Fstate.json")[0] == 404
        assert _get(url + "report.html")[0] == 404  # not written yet
        req = urllib.request.Request(url + "api/status", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)  # noqa: S310
        assert err.value.code == 405
    finally:
        page.stop()


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)")
def test_a_person_sees_the_running_phase_the_sites_and_the_curves(study_dir: Path) -> None:
    page = LivePage(study_dir)
    url = page.start()
    try:
        res = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                              "--dump-dom", url], capture_output=True, timeout=120)
    finally:
        page.stop()
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    dom = res.stdout.decode()
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
    assert "fedsynth study: tiny" in text and "running: synthetic-pool" in text
    assert re.search(r"synthetic-pool\s+running\s+4\d\.\d s", text), text[:2000]
    assert "left the study: timed out in publish" in text and "75.0 %" in text
    assert 'href="certificates/site-1"' in dom and "<polyline" in dom
    assert not re.search(r"""(src|href)=["']https?://""", dom)  # nothing remote


def test_study_page_refuses_a_missing_directory_in_one_line(tmp_path: Path, capsys) -> None:
    from fedsynth.cli import main

    assert main(["study-page", str(tmp_path / "nope")]) != 0
    err = capsys.readouterr().err.strip()
    assert "no such study directory" in err and "\n" not in err


def test_the_request_in_flight_is_shown_site_by_site(study_dir: Path) -> None:
    from fedsynth.federation.study_dir import StudyLayout

    since = time.time() - 12
    StudyLayout(study_dir).progress.write_text(json.dumps({
        "method": "synthetic-pool", "message": "evaluate", "since": since,
        "sites": {"site-1": "replied", "site-2": "working"}}))
    req = study_status(study_dir)["request"]
    assert req["open"] and req["sites"] == {"site-1": "replied", "site-2": "working"} and 11 < req["seconds"] < 60


def test_time_left_comes_only_from_measured_phases_of_the_same_kind() -> None:
    from fedsynth.federation.live_view import estimate_remaining

    phases = [{"name": "setup", "state": "done", "seconds": 3.0},
              {"name": "train-generators", "state": "done", "seconds": 100.0},
              {"name": "publish", "state": "done", "seconds": 10.0},
              {"name": "synthetic-pool", "state": "running", "seconds": 20.0},
              {"name": "fedavg", "state": "waiting", "seconds": None},
              {"name": "evaluation", "state": "waiting", "seconds": None},
              {"name": "report", "state": "waiting", "seconds": None}]
    assert estimate_remaining(phases) == (None, False)  # no method has finished: no guess
    phases[3] = {"name": "synthetic-pool", "state": "done", "seconds": 60.0}
    phases[4] = {"name": "fedavg", "state": "running", "seconds": 45.0}
    assert estimate_remaining(phases) == (15.0, False)  # fedavg as long as the pool took; evaluation unmeasured


def test_the_terminal_view_draws_phases_sites_and_time(study_dir: Path) -> None:
    from rich.console import Console

    from fedsynth.federation.live_view import render

    console = Console(record=True, width=120, color_system=None)
    console.print(render(study_status(study_dir)))
    text = console.export_text()
    assert "fedsynth study tiny" in text and "running: synthetic-pool" in text
    assert re.search(r"✓\s+train-generators\s+1 min 40 s", text) and re.search(r"▶\s+synthetic-pool\s+42", text)
    assert re.search(r"·\s+fedavg", text)
    assert "time left: estimating" in text and "left the study: site-3" in text


def test_off_a_terminal_each_phase_is_one_line_once(study_dir: Path) -> None:
    import io

    from fedsynth.federation.live_view import PhaseLines

    buf = io.StringIO()
    lines = PhaseLines(study_dir, stream=buf)
    lines._emit()
    lines._emit()  # nothing changed: nothing new
    out = buf.getvalue().splitlines()
    assert out == ["phase setup: done in 3.0 s", "phase train-generators: done in 1 min 40 s",
                   "phase publish: done in 10.0 s", "phase synthetic-pool: running"]
