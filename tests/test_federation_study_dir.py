"""The study directory: the typed spec, where a run finds it, the saved state across versions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedsynth.errors import ConfigError
from fedsynth.federation.config import ScenarioConfig
from fedsynth.federation.names import Method, Phase, canonical_phase
from fedsynth.federation.study_dir import (
    StudyLayout,
    StudySpec,
    load_spec,
    resolve_study,
    write_spec,
)
from fedsynth.federation.study_state import StudyState


def _spec(out: Path) -> StudySpec:
    sc = ScenarioConfig(name="t", gate={"metrics": ["pixel_rmse"], "percentile": 2.0},
                        task={"task": "ldct", "channels": 4})
    return StudySpec(scenario=sc, out=out, site_keys=out / "keys", audit_dir=out / "audit")


def test_spec_round_trips_with_typed_gate_and_task(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    write_spec(spec)
    back = load_spec(tmp_path)
    assert back == spec
    assert back.scenario.gate.percentile == 2.0 and back.scenario.task.channels == 4


def test_a_broken_spec_is_one_line(tmp_path: Path) -> None:
    StudyLayout(tmp_path).spec.write_text('{"scenario": {"name": "t"}, "out": 3}')
    with pytest.raises(ConfigError) as err:
        load_spec(tmp_path)
    assert "study.json" in str(err.value) and "\n" not in str(err.value)


def test_resolve_prefers_the_bound_study_then_the_coordinator(tmp_path: Path) -> None:
    spec = _spec(tmp_path / "sim")
    write_spec(spec)
    assert resolve_study({"out": str(tmp_path / "elsewhere")}, study_dir=tmp_path / "sim") == spec
    assert resolve_study({"out": str(tmp_path / "sim")}) == spec
    coord = tmp_path / "coordinator.toml"
    coord.write_text(f'scenario = "tiny"\nout = "{tmp_path / "dep"}"\nsite_keys = "{tmp_path / "k"}"\n'
                     "expected_sites = 2\n")
    # a coordinator TOML wins over a simulated study that happens to sit in the default directory
    dep = resolve_study({"coordinator": str(coord), "out": str(tmp_path / "sim")})
    assert dep.mode == "deployment" and dep.out == tmp_path / "dep" and dep.n_expected == 2


def test_state_reads_older_phase_names_and_rejects_garbage(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"done": ["train_generators", "publish", "synthetic_pool", "local_only"],
                                "wall_seconds": {"site_info": 1.0, "centralised_real": 2.0}}))
    state = StudyState.load(path)
    assert state.done == [Phase.TRAIN_GENERATORS, Phase.PUBLISH, Method.SYNTHETIC_POOL, Method.LOCAL_ONLY]
    assert set(state.wall_seconds) == {Phase.SETUP, Method.CENTRALISED_REAL}
    assert canonical_phase("fedavg") == Method.FEDAVG
    path.write_text('{"done": 3}')
    with pytest.raises(ConfigError, match="state.json"):
        StudyState.load(path)
    path.write_text("{trunc")
    with pytest.raises(ConfigError, match="unreadable"):
        StudyState.load(path)
