"""Re-splits: disjoint test folds, and the studies of every split analysed together with the patient as the unit."""

from __future__ import annotations

import json

import pytest
from fixtures.federation import TINY_SCENARIO

from fedsynth.data.split import split_patients
from fedsynth.errors import DataError


def test_folds_deal_disjoint_test_patients_and_keep_every_part():
    ids = [f"p{i:02d}" for i in range(10)]
    tests = []
    for fold in range(3):  # 5 train / 2 val / 3 test: three disjoint test sets of 3
        part = split_patients(ids, 0.5, seed=4, val_fraction=0.2, fold=fold)
        counts = {p: list(part.values()).count(p) for p in ("train", "val", "test")}
        assert counts == {"train": 5, "val": 2, "test": 3}, fold
        tests.append({p for p, v in part.items() if v == "test"})
    assert not (tests[0] & tests[1]) and not (tests[0] & tests[2]) and not (tests[1] & tests[2])
    assert split_patients(ids, 0.5, seed=4, val_fraction=0.2) == split_patients(ids, 0.5, 4, 0.2, fold=0)
    with pytest.raises(DataError, match="only 3 disjoint test sets"):
        split_patients(ids, 0.5, seed=4, val_fraction=0.2, fold=3)


def test_too_many_splits_for_the_cohort_is_one_line_at_load(tmp_path):
    from fedsynth.config import load_toml
    from fedsynth.errors import ConfigError
    from fedsynth.federation.config import ScenarioConfig

    path = tmp_path / "s.toml"
    path.write_text(TINY_SCENARIO.replace("val_fraction = 0.25\n", "val_fraction = 0.25\nsplits = 5\n"))
    with pytest.raises(ConfigError, match="splits = 5: fold 4: 4 patients give only 4 disjoint test sets") as err:
        load_toml(path, ScenarioConfig)
    assert "\n" not in str(err.value)


def test_merged_states_renumber_each_folds_patients_and_keep_images_in_line():
    from fedsynth.federation.splits import PATIENTS_PER_FOLD, merge_states
    from fedsynth.federation.study_state import StudyState

    def state(k: int, with_fedavg: bool) -> StudyState:
        ev = {"synthetic-pool": {"site-1": {"psnr": [30.0 + k, 31.0 + k]}}}
        if with_fedavg:
            ev["fedavg"] = {"site-1": {"psnr": [29.0, 29.5]}}
        return StudyState(evaluations=ev, test_patients={"site-1": [0, 1]}, wall_seconds={"publish": 10.0},
                          privacy={"site-1": {"n_published": 5 + k}}, bytes={"fedavg": {"sent": 3, "received": 1}})

    merged, dropped = merge_states([state(0, True), state(1, False)])
    assert merged.evaluations["synthetic-pool"]["site-1"]["psnr"] == [30.0, 31.0, 31.0, 32.0]
    assert merged.test_patients["site-1"] == [0, 1, PATIENTS_PER_FOLD, PATIENTS_PER_FOLD + 1]
    assert "fedavg" not in merged.evaluations and dropped == ["fedavg on site-1"]
    assert merged.wall_seconds == {"publish": 20.0} and merged.bytes["fedavg"] == {"sent": 6, "received": 2}
    assert set(merged.privacy) == {"site-1", "site-1@split1"}


@pytest.mark.slow
def test_a_two_split_study_reports_verdicts_on_both_folds_patients(tmp_path):
    from fedsynth.config import load_toml
    from fedsynth.federation.config import ScenarioConfig
    from fedsynth.federation.splits import run_split_study

    path = tmp_path / "s.toml"
    toml = TINY_SCENARIO.replace("val_fraction = 0.25\n", "val_fraction = 0.25\nsplits = 2\n")
    toml = toml.replace('metrics = ["pixel_rmse", "ncc_robust", "learned_copy"]', 'metrics = ["pixel_rmse", "ncc_robust"]')
    toml = toml.replace("phase_scrambled_control = true\nuntextured_control = true\n", "")
    path.write_text(toml)
    scenario = load_toml(path, ScenarioConfig)
    report = run_split_study(scenario, tmp_path / "out", verbose=False)
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
    assert on_disk["patient_comparisons"] == report["patient_comparisons"]
    assert (tmp_path / "out" / "report.html").is_file()
    assert [s["fold"] for s in report["splits"]] == [0, 1]
    folds = []
    for k in (0, 1):
        state = json.loads((tmp_path / "out" / f"split-{k}" / "coordinator" / "state.json").read_text())
        folds.append(state)
        assert state["generators"]  # each split trained its own generators
    assert folds[0]["generators"] != folds[1]["generators"]
    for c in report["patient_comparisons"]:  # one test patient per site and fold: 2 folds x 3 sites
        assert c["n_patients"] == 6 and c["verdict"] in (
            "superior", "equivalent", "non-inferior", "inferior", "inconclusive")
    for c in report["splits"][0]["patient_comparisons"]:
        assert c["n_patients"] == 3
