"""report.json schema, summaries/comparisons and the self-contained HTML."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from fixtures.images import body_discs

from fedsynth.errors import ConfigError
from fedsynth.report import ReportModel, compare, load_report, render_html, summarise, write_report


def _per_image() -> dict:
    rng = np.random.default_rng(0)
    out: dict = {"real": {}, "synthetic": {}, "worse": {}}
    for site, n in (("site-1", 12), ("site-2", 10)):
        psnr = rng.normal(32, 1.5, n)
        ssim = np.clip(rng.normal(0.9, 0.02, n), 0, 1)
        rmse = 10 ** (-psnr / 20)
        out["real"][site] = {"psnr": psnr, "ssim": ssim, "rmse": rmse}
        out["synthetic"][site] = {"psnr": psnr + rng.normal(0, 0.05, n), "ssim": ssim + rng.normal(0, 1e-3, n),
                                  "rmse": rmse}
        out["worse"][site] = {"psnr": psnr - 2 + rng.normal(0, 0.2, n), "ssim": ssim - 0.05, "rmse": rmse * 1.3}
    return out


def _report() -> dict:
    per = _per_image()
    return {
        "methods": summarise(per),
        "comparisons": compare(per, "real", {"psnr": 0.5, "ssim": 0.01}),
        "privacy": {"site-1": {"threshold": 0.1, "min_nn_distance": 0.12, "n_published": 40, "n_rejected": 3}},
        "communication_bytes": {"synthetic": 123456, "fedavg": {"sent": 10, "received": 20, "total": 30}},
        "wall_seconds": {"total": 12.5},
        "missing_sites": [],
        "notes": ["test <b>note</b>"],
        "scenario": "unit",
    }


def test_summarise_and_compare() -> None:
    per = _per_image()
    methods = summarise(per)
    pooled = methods["real"]["pooled"]
    assert pooled["n"] == 22
    allv = np.concatenate([per["real"][s]["psnr"] for s in ("site-1", "site-2")])
    assert pooled["psnr"]["mean"] == pytest.approx(allv.mean())
    assert pooled["psnr"]["ci_low"] < pooled["psnr"]["mean"] < pooled["psnr"]["ci_high"]
    comps = compare(per, "real", {"psnr": 0.5, "ssim": 0.01})
    # 2 other methods x 2 metrics x (2 sites + pooled)
    assert len(comps) == 12
    get = {(c["a"], c["metric"], c["site"]): c for c in comps}
    assert get[("synthetic", "psnr", "pooled")]["equivalent"]
    assert get[("synthetic", "psnr", "pooled")]["n"] == 22
    worse = get[("worse", "psnr", "pooled")]
    assert worse["significant"] and not worse["equivalent"] and worse["mean_diff"] == pytest.approx(-2, abs=0.2)
    with pytest.raises(KeyError):
        compare(per, "nope")


def test_write_and_load_round_trip(tmp_path) -> None:
    path = write_report(tmp_path, _report())
    model = load_report(path)
    assert isinstance(model, ReportModel)
    assert model.methods["real"].pooled.n == 22
    assert model.scenario == "unit"
    assert {c.metric for c in model.comparisons} == {"psnr", "ssim"}
    assert not list(tmp_path.glob("*.tmp*"))


def test_accepts_plain_mean_reports_as_the_federation_writes() -> None:
    rep = {"methods": {"fedavg": {"per_site": {"s1": {"psnr": 30.0, "ssim": 0.9, "rmse": 0.03, "n": 4}},
                                  "pooled": {"psnr": 30.0, "ssim": None, "rmse": 0.03, "n": 4}, "label": "FedAvg"}},
           "comparisons": [{"a": "x", "b": "y", "metric": "psnr", "margin": 0.5, "n": 4, "mean_diff": None,
                            "p_ttest": None, "p_tost": None}],
           "missing_sites": {"s2": "timed out"}, "wall_seconds": {"total": 3.0},
           "communication_bytes": {"fedavg": {"sent": 1, "received": 2, "total": 3}}}
    ReportModel.model_validate(rep)


@pytest.mark.parametrize(
    ("mutate", "expect"),
    [
        (lambda r: r.pop("methods"), "methods"),
        (lambda r: r["comparisons"][0].update(margin=-1), "margin"),
        (lambda r: r["methods"]["real"]["pooled"].update(n="many"), "n"),
        (lambda r: r["comparisons"][0].pop("p_tost"), "p_tost"),
        (lambda r: r.update(wall_seconds="slow"), "wall_seconds"),
    ],
)
def test_schema_rejects_bad_json_with_one_line(tmp_path, mutate, expect: str) -> None:
    rep = json.loads(json.dumps(_report()))
    mutate(rep)
    path = tmp_path / "report.json"
    path.write_text(json.dumps(rep))
    with pytest.raises(ConfigError) as err:
        load_report(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and expect in msg
    with pytest.raises(ConfigError):
        write_report(tmp_path / "w", rep)
    assert not (tmp_path / "w" / "report.json").exists()


def test_load_report_file_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_report(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_report(tmp_path / "bad.json")


def test_html_renders_self_contained(tmp_path) -> None:
    path = write_report(tmp_path, _report())
    imgs = body_discs(3, 32)
    out = render_html(
        path,
        tmp_path / "report.html",
        figures_inputs={"examples": {"input": imgs * 0.9, "output": imgs, "target": imgs}, "crop": 24,
                        "samples": {"site-1 real": imgs, "site-1 synthetic": imgs[::-1]}},
    )
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!doctype html>") and text.rstrip().endswith("</html>")
    assert not re.search(r"https?:", text, flags=re.IGNORECASE)
    assert "<script" not in text.lower()
    assert text.count("data:image/png;base64,") == 5  # 3 metric bars + examples + sample grid
    assert "&lt;b&gt;note&lt;/b&gt;" in text  # notes are escaped
    assert "synthetic − real" in text and "p (TOST)" in text
    # a plain dict works too (the federation passes one)
    render_html(_report(), tmp_path / "r2.html")
    assert (tmp_path / "r2.html").stat().st_size > 1000


def test_html_draws_learning_curves_and_every_patient(tmp_path) -> None:
    rep = _report()
    curve = [{"epoch": 2, "steps": 10, "samples": 40, "val_mse": 2e-4, "val_psnr": 37.0, "bytes": 1000, "best": False},
             {"epoch": 4, "steps": 20, "samples": 80, "val_mse": 1e-4, "val_psnr": 40.0, "bytes": 2000, "best": True}]
    rep["training"] = {"synthetic": {"best_epoch": 4, "epochs": 4, "steps": 20, "samples": 80, "best_val_psnr": 40.0,
                                     "seconds": 1.5, "curve": curve}}
    rep["per_patient"] = {"synthetic": {"patients": ["site-1#0", "site-1#1"], "psnr": [39.0, 41.0]},
                          "real": {"patients": ["site-1#0", "site-1#1"], "psnr": [39.5, 40.5]}}
    text = render_html(write_report(tmp_path, rep), tmp_path / "report.html").read_text(encoding="utf-8")
    assert text.count("data:image/png;base64,") == 5  # patient plot + 3 metric bars + learning curves
    assert "Training effort and learning curves" in text and "<td>synthetic</td><td>4</td><td>4</td>" in text
    assert text.index("per-patient PSNR") < text.index("<h2>Metrics</h2>")  # the patients come with the verdicts
    assert "1 of 1 trainings kept the weights of their last validation" in text  # best epoch 4 of 4: budget-bound


def test_html_shows_memorisation_and_the_closest_pairs(tmp_path) -> None:
    rep = _report()
    rep["privacy"]["site-1"]["memorisation"] = {"metrics": {"learned_copy": {
        "membership_auc": 0.61, "membership_auc_ci95": [0.52, 0.70], "held_out_p05": 0.07, "near_copy_share": 0.125}}}
    rep["privacy"]["site-1"]["candidates_flagged"] = {"learned_copy": 0.25}
    imgs = body_discs(2, 32)
    closest = {"site-1": {"published": imgs, "real": imgs[::-1], "pixel_rmse": [0.0412, 0.0533]}}
    text = render_html(write_report(tmp_path, rep), tmp_path / "report.html",
                       figures_inputs={"closest": closest}).read_text(encoding="utf-8")
    assert "<h2>Memorisation</h2>" in text
    assert "<td>site-1</td><td>learned_copy</td><td>0.61 [0.52, 0.7]</td><td>12.5 %</td><td>25.0 %</td>" in text
    assert "Closest published / real pairs" in text and "site-1: 0.0412, 0.0533" in text
