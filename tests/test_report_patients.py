"""Patient-level comparisons, Holm's correction and verdicts: known answers, scipy cross-checks, the report."""

from __future__ import annotations

import json
import logging
import math
import warnings

import numpy as np
import pytest
from scipy import stats

from fedsynth.report import (
    ReportModel,
    add_verdicts,
    compare,
    compare_by_patient,
    holm,
    load_report,
    paired_comparison,
    per_patient,
    render_html,
    summarise,
    write_report,
)

Scores = dict[str, dict[str, np.ndarray]]


def _from_patient_diffs(
    diffs: dict[str, list[float]], n_img: int = 6, jitter: float = 0.05, metric: str = "psnr", seed: int = 0
) -> tuple[Scores, Scores, dict[str, np.ndarray]]:
    """Two methods whose per-patient mean difference ``a - b`` is exactly ``diffs[site][patient]``.

    The within-patient noise alternates ``+jitter, -jitter`` (n_img even), so it
    averages out per patient and the patient-level answer is known exactly.
    """
    rng = np.random.default_rng(seed)
    a: Scores = {}
    b: Scores = {}
    patients: dict[str, np.ndarray] = {}
    for site, per in diffs.items():
        pid = np.repeat(np.arange(len(per)), n_img)
        base = rng.normal(30.0, 2.0, pid.size)
        noise = np.tile(np.array([jitter, -jitter]), pid.size // 2)
        a[site] = {metric: base}
        b[site] = {metric: base - np.asarray(per)[pid] - noise}
        patients[site] = pid
    return a, b, patients


def _random_effects(seed: int, effect: float, n_sites: int = 3, n_pat: int = 4, n_img: int = 6,
                    patient_sd: float = 0.2, noise: float = 0.1) -> tuple[Scores, Scores, dict[str, np.ndarray]]:
    """``b = a - effect + patient random effect + image noise`` (3 sites x 4 patients x 6 images by default)."""
    rng = np.random.default_rng(seed)
    a: Scores = {}
    b: Scores = {}
    patients: dict[str, np.ndarray] = {}
    for s in range(n_sites):
        site = f"site-{s + 1}"
        pid = np.repeat(np.arange(n_pat), n_img)
        base = rng.normal(30.0, 2.0, pid.size)
        a[site] = {"psnr": base}
        b[site] = {"psnr": base - effect + rng.normal(0, patient_sd, n_pat)[pid] + rng.normal(0, noise, pid.size)}
        patients[site] = pid
    return a, b, patients


# --- per_patient -------------------------------------------------------------------------------------------


def test_per_patient_means_sorted_keys() -> None:
    keys, means = per_patient([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 0, 2, 1, 0, 1])
    assert keys.tolist() == [0, 1, 2]
    assert means.tolist() == [3.5, 5.0, 2.0]
    keys, means = per_patient(np.array([1.0, 3.0, 10.0]), np.array(["p2", "p2", "p1"]))
    assert keys.tolist() == ["p1", "p2"] and means.tolist() == [10.0, 2.0]
    with pytest.raises(ValueError, match="same length"):
        per_patient([1.0, 2.0], [0])


# --- holm --------------------------------------------------------------------------------------------------


def test_holm_hand_computed() -> None:
    # sorted 0.01, 0.03, 0.04 -> x3, x2, x1 = 0.03, 0.06, 0.04 -> running max 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None])
    assert holm([0.001, 0.013, 0.012]) == pytest.approx([0.003, 0.024, 0.024])  # monotone, not 0.013
    assert holm([0.4, 0.5]) == pytest.approx([0.8, 0.8])  # 0.5 x 1 is raised to 0.8
    assert holm([0.6, 0.7, 0.9]) == [1.0, 1.0, 1.0]  # capped
    assert holm([0.02]) == [0.02]
    assert holm([]) == [] and holm([None, float("nan")]) == [None, None]


def test_holm_matches_statsmodels() -> None:
    from statsmodels.stats.multitest import multipletests

    p = np.random.default_rng(3).uniform(0, 0.2, 12)
    expected = multipletests(p, method="holm")[1]
    assert holm(list(p)) == pytest.approx(list(expected), rel=1e-12)


# --- compare_by_patient ------------------------------------------------------------------------------------


def test_large_effect_is_superior_with_bootstrap_ci_excluding_zero() -> None:
    a, b, patients = _random_effects(0, effect=1.0)
    r = compare_by_patient(a, b, patients, "psnr", margin=0.5)
    assert (r["unit"], r["n_patients"], r["n_sites"], r["n_images"]) == ("patient", 12, 3, 72)
    # by hand: the mean over the 12 patients of each patient's mean difference
    by_hand = np.mean([np.mean(a[s]["psnr"][patients[s] == p] - b[s]["psnr"][patients[s] == p])
                       for s in a for p in range(4)])
    assert r["mean_diff"] == pytest.approx(by_hand, rel=1e-12)
    assert r["mean_diff"] == pytest.approx(1.0, abs=0.2)
    assert 0 < r["ci95_low"] < r["mean_diff"] < r["ci95_high"]
    assert r["ci90_low"] < r["mean_diff"] < r["ci90_high"] and r["ci90_low"] > 0.5
    assert r["p_ttest"] < 1e-6 and r["p_wilcoxon"] < 0.001 and r["p_noninferior"] < 1e-6
    assert r["p_tost"] > 0.5  # a difference of ~1 is not equivalent within ±0.5
    mixed = r["mixed"]
    assert mixed is not None and mixed["estimate"] == pytest.approx(1.0, abs=0.2)
    assert mixed["ci_low"] < mixed["estimate"] < mixed["ci_high"] and mixed["model"] in ("site + patient", "patient")
    (v,) = add_verdicts([{"a": "new", "b": "old", **r}])
    assert v["verdict"] == "superior"
    assert v["verdict_text"].startswith("new vs old, psnr: superior (12 patients; mean difference ")


def test_known_patient_differences_match_scipy() -> None:
    # 6 patients over 2 sites with exact per-patient differences; the tests must equal scipy's on them
    d = {"site-1": [0.3, 0.1, 0.5], "site-2": [0.2, 0.4, 0.0]}
    a, b, patients = _from_patient_diffs(d)
    dp = np.array(d["site-1"] + d["site-2"])
    r = compare_by_patient(a, b, patients, "psnr", margin=0.5)
    assert r["mean_diff"] == pytest.approx(0.25, abs=1e-12)
    assert r["p_ttest"] == pytest.approx(stats.ttest_1samp(dp, 0).pvalue, rel=1e-9)
    assert r["p_wilcoxon"] == pytest.approx(stats.wilcoxon(dp[dp != 0]).pvalue, rel=1e-9)
    lower = stats.ttest_1samp(dp, -0.5, alternative="greater").pvalue
    upper = stats.ttest_1samp(dp, 0.5, alternative="less").pvalue
    assert r["p_tost"] == pytest.approx(max(lower, upper), rel=1e-9)
    assert r["p_noninferior"] == pytest.approx(lower, rel=1e-9)
    half = stats.t.ppf(0.95, 5) * dp.std(ddof=1) / math.sqrt(6)
    assert (r["ci90_low"], r["ci90_high"]) == pytest.approx((0.25 - half, 0.25 + half), rel=1e-9)


def test_tost_decision_is_the_90_percent_ci_inside_the_margin() -> None:
    a, b, patients = _from_patient_diffs({"s1": [0.3, 0.1, 0.5, 0.2], "s2": [0.4, 0.0, 0.35, 0.15]})
    for margin in np.linspace(0.3, 0.8, 26):
        r = compare_by_patient(a, b, patients, "psnr", margin=float(margin), n_boot=50)
        inside = -margin < r["ci90_low"] and r["ci90_high"] < margin
        assert (r["p_tost"] < 0.05) == inside, margin


def test_hierarchical_bootstrap_resamples_sites_known_case() -> None:
    # every patient of a site has the same difference (0, 1, 2 by site): patient resampling changes nothing,
    # so the bootstrap mean is the mean of 3 sites drawn with replacement from {0, 1, 2}: 1/27 of resamples
    # are all 0 and 1/27 all 2, more than the 2.5 % in each tail, so the 95 % interval is exactly [0, 2]
    a, b, patients = _from_patient_diffs({"s1": [0.0, 0.0], "s2": [1.0, 1.0], "s3": [2.0, 2.0]}, jitter=0.0)
    r = compare_by_patient(a, b, patients, "psnr", margin=0.5)
    assert (r["ci95_low"], r["ci95_high"]) == pytest.approx((0.0, 2.0), abs=1e-12)
    again = compare_by_patient(a, b, patients, "psnr", margin=0.5)
    assert again["ci95_low"] == r["ci95_low"] and again["ci95_high"] == r["ci95_high"]  # seeded


def test_the_bootstrap_resamples_seeds_when_their_runs_are_given() -> None:
    # two seeds that disagree: every patient's difference is +1 under seed 0 and -1 under seed 1, so the
    # seed-averaged differences are all 0 and a sites-and-patients bootstrap sees no uncertainty at all;
    # resampling the two seeds gives {+1, -1} each a quarter of the time: the 95 % interval is exactly [-1, 1]
    diffs = {"s1": [0.0] * 3, "s2": [0.0] * 3}
    avg_a, avg_b, patients = _from_patient_diffs(diffs, jitter=0.0)
    runs = []
    for d in (1.0, -1.0):
        a_k, b_k, _ = _from_patient_diffs({k: [d] * 3 for k in diffs}, jitter=0.0)
        runs.append((a_k, b_k))
    plain = compare_by_patient(avg_a, avg_b, patients, "psnr", margin=0.5)
    assert (plain["ci95_low"], plain["ci95_high"]) == pytest.approx((0.0, 0.0), abs=1e-12)
    assert plain["bootstrap_levels"] == "sites, patients"
    seeded = compare_by_patient(avg_a, avg_b, patients, "psnr", margin=0.5, seed_runs=runs)
    assert (seeded["ci95_low"], seeded["ci95_high"]) == pytest.approx((-1.0, 1.0), abs=1e-12)
    assert seeded["bootstrap_levels"] == "sites, patients, seeds (2)"
    assert seeded["mean_diff"] == plain["mean_diff"] and seeded["p_ttest"] == plain["p_ttest"]  # verdict inputs


def test_seed_runs_that_do_not_line_up_keep_the_seed_average(caplog) -> None:
    a, b, patients = _from_patient_diffs({"s1": [0.5, 1.0, 1.5]})
    other = {"s1": {"psnr": a["s1"]["psnr"][:6]}}  # one seed scored on fewer images
    with caplog.at_level(logging.WARNING):
        r = compare_by_patient(a, b, patients, "psnr", margin=0.5, seed_runs=[(a, b), (other, b)])
    assert r["bootstrap_levels"] == "sites, patients"
    assert "do not line up" in caplog.text


def test_identical_methods_are_equivalent() -> None:
    rng = np.random.default_rng(5)
    a, _, patients = _random_effects(1, effect=0.0)
    b = {s: {"psnr": v["psnr"] + rng.uniform(-0.01, 0.01, v["psnr"].size)} for s, v in a.items()}
    r = compare_by_patient(a, b, patients, "psnr", margin=0.5)
    assert abs(r["mean_diff"]) < 0.01 and r["p_tost"] < 1e-10
    assert -0.5 < r["ci90_low"] < r["ci90_high"] < 0.5
    (v,) = add_verdicts([{"a": "x", "b": "y", **r}])
    assert v["verdict"] == "equivalent" and "equivalent within ±0.5 (12 patients" in v["verdict_text"]


def test_small_effect_with_three_patients_is_inconclusive() -> None:
    # patient differences 0.9, -0.5, 0.2: mean 0.2, sd 0.7, se 0.404, 2 dof; no test reaches 0.05
    a, b, patients = _from_patient_diffs({"site-1": [0.9, -0.5, 0.2]})
    r = compare_by_patient(a, b, patients, "psnr", margin=0.5)
    se = 0.7 / math.sqrt(3)
    assert r["mean_diff"] == pytest.approx(0.2, abs=1e-12)
    assert r["p_ttest"] == pytest.approx(2 * stats.t.sf(0.2 / se, 2), rel=1e-6)
    assert r["p_noninferior"] == pytest.approx(stats.t.sf(0.7 / se, 2), rel=1e-6)
    assert r["p_tost"] == pytest.approx(stats.t.cdf(-0.3 / se, 2), rel=1e-6)
    (v,) = add_verdicts([{"a": "x", "b": "y", **r}])
    assert v["verdict"] == "inconclusive"


def test_lower_is_better_flips_the_direction() -> None:
    # a's RMSE is 0.02 lower than b's on every patient (+ spread): better for RMSE, worse if read as PSNR
    d = {"s1": [-0.02, -0.025, -0.015], "s2": [-0.018, -0.022, -0.02]}
    a, b, patients = _from_patient_diffs(d, metric="rmse", jitter=0.001)
    rmse = compare_by_patient(a, b, patients, "rmse", margin=0.005, higher_is_better=False)
    as_if_higher = compare_by_patient(a, b, patients, "rmse", margin=0.005, higher_is_better=True)
    assert rmse["mean_diff"] == as_if_higher["mean_diff"] == pytest.approx(-0.02, abs=1e-12)
    assert rmse["p_ttest"] == as_if_higher["p_ttest"] < 1e-4
    dp = np.concatenate([d["s1"], d["s2"]])
    assert rmse["p_noninferior"] == pytest.approx(stats.ttest_1samp(dp, 0.005, alternative="less").pvalue)
    assert as_if_higher["p_noninferior"] == pytest.approx(
        stats.ttest_1samp(dp, -0.005, alternative="greater").pvalue)
    lower_better, higher_better = add_verdicts([{"a": "x", "b": "y", **rmse}, {"a": "x", "b": "y", **as_if_higher}])
    assert lower_better["verdict"] == "superior" and higher_better["verdict"] == "inferior"


def test_fewer_than_two_patients_gives_none_without_warnings() -> None:
    a, b, patients = _from_patient_diffs({"site-1": [0.3]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = compare_by_patient(a, b, patients, "psnr", margin=0.5)
        none = compare_by_patient(a, b, patients, "ssim", margin=0.01)  # a metric nobody scored
        rows = add_verdicts([{"a": "x", "b": "y", **r}, {"a": "x", "b": "y", **none}])
    assert r["n_patients"] == 1 and r["n_images"] == 6 and r["mean_diff"] == pytest.approx(0.3)
    for key in ("ci90_low", "ci90_high", "ci95_low", "ci95_high", "p_ttest", "p_wilcoxon", "p_tost",
                "p_noninferior", "mixed"):
        assert r[key] is None and none[key] is None, key
    assert none["n_patients"] == 0 and none["mean_diff"] is None
    assert [v["verdict"] for v in rows] == ["inconclusive", "inconclusive"]
    assert rows[0]["verdict_text"] == "x vs y, psnr: inconclusive (1 patient; mean difference 0.3; no CI)"


def test_unpairable_sites_are_skipped_and_logged(caplog) -> None:
    a, b, patients = _from_patient_diffs({"s1": [0.1, 0.2], "s2": [0.3, 0.4], "s3": [0.5, 0.6]})
    b["s2"]["psnr"] = b["s2"]["psnr"][:-1]  # different numbers of images: not paired
    patients["s3"] = patients["s3"][:-2]  # patient numbers that do not describe the images
    a["only-a"] = {"psnr": np.ones(4)}  # scored by one method only (e.g. local-only): ignored quietly
    with caplog.at_level(logging.WARNING, logger="fedsynth.report.patients"):
        r = compare_by_patient(a, b, patients, "psnr", margin=0.5)
    assert (r["n_sites"], r["n_patients"]) == (1, 2) and r["mean_diff"] == pytest.approx(0.15)
    assert set(r["skipped_sites"]) == {"s2", "s3"}
    assert "s2" in caplog.text and "s3" in caplog.text and "only-a" not in caplog.text
    with pytest.raises(ValueError, match="margin"):
        compare_by_patient(a, b, patients, "psnr", margin=0.0)


def test_slice_level_p_is_pseudo_replication() -> None:
    # Why the patient is the unit: 4 patients x 60 slices. The patients disagree (two gain, one loses, one
    # is unchanged), so the data say little about the method, but every slice of a patient repeats that
    # patient's difference. Counting 240 slices as independent gives an absurdly small p-value.
    a, b, patients = _from_patient_diffs({"site-1": [0.6, -0.2, 0.9, 0.1]}, n_img=60, jitter=0.1)
    slice_level = paired_comparison(a["site-1"]["psnr"], b["site-1"]["psnr"], margin=0.5)
    patient_level = compare_by_patient(a, b, patients, "psnr", margin=0.5)
    assert slice_level.n == 240 and patient_level["n_patients"] == 4
    assert slice_level.mean_diff == pytest.approx(patient_level["mean_diff"])  # same estimate ...
    assert slice_level.p_ttest < 1e-20  # ... "highly significant" per slice
    assert patient_level["p_ttest"] > 0.1  # ... not even close per patient
    assert patient_level["p_ttest"] / slice_level.p_ttest > 1e15


def test_add_verdicts_rule_order_holm_families_and_no_mutation() -> None:
    base = {"a": "x", "b": "y", "metric": "psnr", "margin": 0.5, "n_patients": 9, "higher_is_better": True}
    rows = [
        {**base, "mean_diff": 0.1, "p_ttest": 0.001, "p_tost": 0.001, "p_noninferior": 0.001},  # both: equivalence wins
        {**base, "mean_diff": -1.0, "p_ttest": 0.001, "p_tost": 0.9, "p_noninferior": 0.9},
        {**base, "mean_diff": -1.0, "p_ttest": 0.001, "p_tost": 0.9, "p_noninferior": 0.9, "higher_is_better": False},
        {**base, "mean_diff": 0.1, "p_ttest": 0.5, "p_tost": 0.2, "p_noninferior": 0.004},
        {**base, "mean_diff": 0.1, "p_ttest": None, "p_tost": None, "p_noninferior": None},
    ]
    snapshot = json.dumps(rows)
    out = add_verdicts(rows)
    assert json.dumps(rows) == snapshot and out is not rows  # inputs untouched
    assert [r["verdict"] for r in out] == ["equivalent", "inferior", "superior", "non-inferior", "inconclusive"]
    assert [r["p_ttest_holm"] for r in out] == pytest.approx([0.004, 0.004, 0.004, 0.5, None])
    assert [r["p_noninferior_holm"] for r in out] == pytest.approx([0.004, 1.0, 1.0, 0.012, None])
    # multiplicity matters: p = 0.03 alone is superior; two such tests in one family are not
    one = {**base, "mean_diff": 0.3, "p_ttest": 0.03, "p_tost": 0.9, "p_noninferior": 0.9}
    assert add_verdicts([one])[0]["verdict"] == "superior"
    assert [r["verdict"] for r in add_verdicts([one, one])] == ["inconclusive", "inconclusive"]


def test_verdict_text_format() -> None:
    row = {"a": "synthetic-pool", "b": "fedavg", "metric": "psnr", "margin": 0.5, "n_patients": 9,
           "mean_diff": 0.06, "ci90_low": -0.21, "ci90_high": 0.34, "p_ttest": 0.7, "p_tost": 0.001,
           "p_noninferior": 0.0005}
    (v,) = add_verdicts([row])
    assert v["verdict_text"] == ("synthetic-pool vs fedavg, psnr: equivalent within ±0.5 "
                                 "(9 patients; mean difference 0.06; 90 % CI \u22120.21 to 0.34)")


# --- report.json and report.html ---------------------------------------------------------------------------


def _report() -> dict:
    rng = np.random.default_rng(0)
    per: dict = {"real": {}, "synthetic": {}}
    patients: dict = {}
    for site in ("site-1", "site-2"):
        pid = np.repeat(np.arange(3), 4)
        psnr = rng.normal(32, 1.5, pid.size)
        per["real"][site] = {"psnr": psnr, "ssim": np.clip(rng.normal(0.9, 0.02, pid.size), 0, 1)}
        per["synthetic"][site] = {"psnr": psnr + rng.normal(0, 0.05, pid.size), "ssim": per["real"][site]["ssim"]}
        patients[site] = pid
    rows = [{"a": "synthetic", "b": "real",
             **compare_by_patient(per["synthetic"], per["real"], patients, m, margin, n_boot=200)}
            for m, margin in (("psnr", 0.5), ("ssim", 0.01))]
    return {"methods": summarise(per), "comparisons": compare(per, "real", {"psnr": 0.5}),
            "patient_comparisons": add_verdicts(rows), "scenario": "unit"}


def test_schema_round_trip_with_patient_comparisons(tmp_path) -> None:
    rep = _report()
    model = load_report(write_report(tmp_path, rep))
    assert [p.metric for p in model.patient_comparisons] == ["psnr", "ssim"]
    psnr = model.patient_comparisons[0]
    assert (psnr.a, psnr.b, psnr.site, psnr.unit, psnr.n_patients, psnr.n_images) == (
        "synthetic", "real", "pooled", "patient", 6, 24)
    assert psnr.verdict == "equivalent" and psnr.p_tost_holm is not None
    assert psnr.mean_diff == pytest.approx(rep["patient_comparisons"][0]["mean_diff"])
    # field order is JSON key order: the verdicts sit right after the per-slice comparisons
    fields = list(ReportModel.model_fields)
    assert fields.index("patient_comparisons") == fields.index("comparisons") + 1
    dumped = list(model.model_dump(exclude_unset=True))
    assert dumped.index("patient_comparisons") == dumped.index("comparisons") + 1
    bad = json.loads((tmp_path / "report.json").read_text())
    bad["patient_comparisons"][0]["verdict"] = "great"
    with pytest.raises(Exception, match="verdict"):
        ReportModel.model_validate(bad)


def test_html_puts_the_verdicts_first(tmp_path) -> None:
    out = render_html(write_report(tmp_path, _report()), tmp_path / "report.html")
    text = out.read_text(encoding="utf-8")
    verdicts = text.index("<h2>Verdicts (patient as the unit)</h2>")
    assert verdicts < text.index("<h2>Metrics</h2>") < text.index("Paired comparisons per slice (descriptive")
    assert text.index("</p>") < verdicts  # after the intro paragraph
    table = text[verdicts:text.index("</table>", verdicts)]
    for col in ("90 % CI", "bootstrap 95 % CI", "mixed-model estimate [CI]", "p (t, Holm)", "p (TOST, Holm)"):
        assert col in table
    assert 'class="v-good"' in table and ">equivalent (±0.5)<" in table
    assert "<script" not in text.lower() and "http" not in text.lower()
    plain = _report()
    plain.pop("patient_comparisons")
    assert "Verdicts (patient as the unit)" not in render_html(plain, tmp_path / "r2.html").read_text()


def test_html_shows_each_sites_two_sample_test_beside_its_floor(tmp_path) -> None:
    rep = _report()
    test = {"auc": 0.93, "ci95": [0.88, 0.98], "folds": [0.9, 0.95, 0.94], "n_a": 112, "n_b": 80, "protocol": "p"}
    floor = {**test, "auc": 0.55, "ci95": [0.31, 0.79]}
    rep["privacy"] = {"site-1": {"n_published": 80, "two_sample": {"synthetic_vs_real": test, "real_vs_real": floor,
                                                                    "real_patients": 7}},
                      "site-2": {"n_published": 12, "two_sample": {"skipped": "a grouped side needs at least 3 groups",
                                                                    "real_patients": 3}}}
    html = render_html(write_report(tmp_path, rep), tmp_path / "r.html").read_text()
    section = html[html.index("classifier two-sample test"):html.index("<h2>Privacy gate")]
    assert "0.93 [0.88, 0.98]" in section and "0.55 [0.31, 0.79]" in section
    assert "skipped: a grouped side needs at least 3 groups" in section
