"""Fault injection (slow): the coordinator killed at a phase boundary resumes, loses nothing, redoes nothing.

The study runs as a real `fedsynth simulate` process; it is SIGKILLed (with
its Ray workers: the whole process group) as soon as ``state.json`` records
the phase, then started again over the same directory. The resumed study
must end with the same numbers as an uninterrupted one, without training a
generator or publishing a bundle again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures.federation import TINY_SCENARIO

pytestmark = pytest.mark.slow


def _simulate(scenario: Path, out: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fedsynth.cli", "simulate", str(scenario), "--out", str(out)],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def _done(out: Path) -> list[str]:
    try:
        return json.loads((out / "coordinator" / "state.json").read_text())["done"]
    except (OSError, ValueError, KeyError):
        return []


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("whole")
    (root / "tiny.toml").write_text(TINY_SCENARIO)
    proc = _simulate(root / "tiny.toml", root / "out", root / "log.txt")
    assert proc.wait(timeout=900) == 0, (root / "log.txt").read_text()[-3000:]
    return json.loads((root / "out" / "report.json").read_text())


# every phase boundary of the tiny study (killing after the last one is the rerun of a finished study,
# test_federation_simulation.py::test_rerun_resumes...)
@pytest.mark.parametrize("kill_after", ["train-generators", "publish", "synthetic-pool", "fedavg", "fedprox",
                                        "local-only", "centralised-real"])
def test_coordinator_killed_after_a_phase_resumes_without_losing_or_redoing_work(tmp_path, uninterrupted, kill_after):
    (tmp_path / "tiny.toml").write_text(TINY_SCENARIO)
    out = tmp_path / "out"
    proc = _simulate(tmp_path / "tiny.toml", out, tmp_path / "first.txt")
    deadline = time.time() + 900
    while kill_after not in _done(out) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, f"the study ended before {kill_after} could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)  # the coordinator and every Ray worker, no cleanup
    proc.wait()
    done_before = _done(out)
    assert kill_after in done_before and "evaluation" not in done_before
    objects = sorted(p.name for p in (out / "pool" / "objects").glob("*.npy"))
    models = {p.name: p.stat().st_mtime_ns for p in (out / "models").glob("*")} if (out / "models").is_dir() else {}
    generators = {p: p.stat().st_mtime_ns for p in out.glob("sites/*/generator/model.pt")}

    again = _simulate(tmp_path / "tiny.toml", out, tmp_path / "second.txt")
    assert again.wait(timeout=900) == 0, (tmp_path / "second.txt").read_text()[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["methods"] == uninterrupted["methods"]  # nothing lost: the same numbers as a run never killed
    assert report["patient_comparisons"] == uninterrupted["patient_comparisons"]
    assert report["privacy"] == uninterrupted["privacy"]
    if "publish" in done_before:  # nothing published twice
        assert sorted(p.name for p in (out / "pool" / "objects").glob("*.npy")) == objects
    assert {p: p.stat().st_mtime_ns for p in out.glob("sites/*/generator/model.pt")} == generators  # no retraining
    for name, mtime in models.items():  # a model trained before the kill is reused, not trained again
        assert (out / "models" / name).stat().st_mtime_ns == mtime, name
    state = json.loads((out / "coordinator" / "state.json").read_text())
    assert state["done"][: len(done_before)] == done_before and "evaluation" in state["done"]
    assert report["pool_quarantine"] == []
