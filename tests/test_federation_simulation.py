"""A whole tiny study on Flower's Simulation Engine: report, leak audit, loopback only, resume.

One simulation (module fixture) with the site audit mod on; the tests then
inspect what it left: every message a site sent, every listening socket seen
while it ran, and a second run over the same directory.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fixtures.federation import TINY_SCENARIO, listening_addresses

from fedsynth.report import validate_report

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from fedsynth.config import load_toml
    from fedsynth.federation.config import ScenarioConfig
    from fedsynth.federation.simulation import run_simulated_study

    root = tmp_path_factory.mktemp("sim")
    (root / "tiny.toml").write_text(TINY_SCENARIO)
    scenario = load_toml(root / "tiny.toml", ScenarioConfig)
    audit = root / "audit"
    seen: set[str] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.update(listening_addresses(os.getpid()))
            time.sleep(0.5)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        t0 = time.perf_counter()
        report = run_simulated_study(scenario, root / "out", audit_dir=audit)
        first_s = time.perf_counter() - t0
    finally:
        stop.set()
        t.join()
    return {"root": root, "out": root / "out", "audit": audit, "report": report, "sockets": seen,
            "scenario": scenario, "first_s": first_s}


def test_report_has_the_design_keys(study):
    rep = json.loads((study["out"] / "report.json").read_text())
    assert (study["out"] / "report.html").is_file()
    for key in ("methods", "comparisons", "privacy", "communication_bytes", "wall_seconds"):
        assert key in rep
    for m in ("synthetic-pool", "fedavg", "fedprox", "local-only", "centralised-real"):
        assert set(rep["methods"][m]["pooled"]) >= {"psnr", "ssim", "rmse", "n"}
        assert rep["methods"][m]["pooled"]["n"] > 0
    pooled = [c for c in rep["comparisons"] if c["site"] == "pooled"]
    assert {c["b"] for c in pooled} == {"fedavg", "fedprox", "local-only", "centralised-real", "phase-scrambled-pool",
                                        "untextured-pool"}
    for c in pooled:  # issue 5's statistics: bootstrap CI around the mean difference, Wilcoxon, TOST
        assert c["a"] == "synthetic-pool" and c["ci_low"] <= c["mean_diff"] <= c["ci_high"]
        assert 0 <= c["p_wilcoxon"] <= 1 and 0 <= c["p_tost"] <= 1
    verdicts = rep["patient_comparisons"]  # the headline: the patient as the unit, one verdict each
    assert {(c["b"], c["metric"]) for c in verdicts} == {(b, m) for b in (
        "fedavg", "fedprox", "local-only", "centralised-real", "phase-scrambled-pool", "untextured-pool")
        for m in ("psnr", "ssim")}
    for c in verdicts:
        assert c["unit"] == "patient" and c["n_patients"] == 3 and c["verdict"] in (
            "superior", "equivalent", "non-inferior", "inferior", "inconclusive")
        assert c["p_ttest_holm"] >= c["p_ttest"]
    psnr = rep["methods"]["fedavg"]["pooled"]["psnr"]
    assert psnr["ci_low"] <= psnr["mean"] <= psnr["ci_high"]
    published = {site: row for site, row in rep["privacy"].items() if row.get("n_published")}
    assert published
    for site, row in published.items():  # each publishing site's signed measurements of its generator
        g = row["generator"]
        assert g["kind"] == "pixel" and g["optimizer_steps"] > 0 and g["images_seen"] > 0, site
        assert g["stopped"] in ("validation", "max_epochs")
        # a tiny generator's samples may hold no flat body region: then the reason, not a number
        assert g.get("noise_skipped") or len(g["noise_power_ratio"]) == len(g["noise_power_ci95"]) == 4
    assert "Site generators" in (study["out"] / "report.html").read_text()
    validate_report(rep)
    assert rep["communication_bytes"]["synthetic-pool"]["received"] > 0
    assert rep["communication_bytes"]["fedavg"]["sent"] > 0
    rep["privacy"].pop("site-3")  # refused by its own policy (next test)
    for site, row in rep["privacy"].items():
        assert row["n_published"] > 0, site
        assert row["policy_digest"].startswith("sha256:")
        assert set(row["memorisation"]["metrics"]) == {"pixel_rmse", "ncc_robust", "learned_copy"}
        for metric, mem in row["memorisation"]["metrics"].items():  # measured at the site, signed, numbers only
            assert 0.0 <= mem["membership_auc"] <= 1.0 and 0.0 <= mem["near_copy_share"] <= 1.0, metric
            assert 0.0 <= row["candidates_flagged"][metric] <= 1.0, metric
            if metric == "learned_copy":  # calibrated on the site's validation patients, not leave-one-out
                continue
            lo, hi = row["threshold_ci95_over_patients"][metric]
            assert lo <= row["threshold"][metric] <= hi
        for metric, thr in row["threshold"].items():
            assert row["min_nn_distance"][metric] >= thr
        review = row["release_review"]  # nobody reviews in a simulation: the certificate says so, signed
        assert review["automatic"] and review["reviewer"] == "automatic (simulation)" and review["withheld"] == 0
    html = (study["out"] / "report.html").read_text()
    assert "Release review at the sites" in html and "released automatically (simulation)" in html
    from fedsynth.federation.pool import SyntheticPool
    from fedsynth.privacy import parse_certificate

    pool = SyntheticPool(study["out"] / "pool")
    for bundle in pool.bundles(verified=True):
        cert = parse_certificate(bundle["certificate"]["certificate"])
        det = cert.metrics["learned_copy"].detector  # the detector that certified, by fingerprint, signed
        assert len(det["fingerprint"]) == 64 and det["config"]["steps"] == 10
        assert cert.pixel_mm == pytest.approx(400.0 / 32 * _fov(bundle["site"]), rel=1e-6)  # 400 mm FOV, 32 px
    assert np.isfinite(pool.pixel_mm()).all() and len(pool.pixel_mm()) == len(pool.digests())


def test_the_untextured_arm_trains_on_the_companions_the_gates_certified(study):
    """Each pooled image comes with its untextured sample, named by digest in its signed certificate."""
    from fedsynth.digests import array_digest
    from fedsynth.federation.pool import SyntheticPool
    from fedsynth.privacy import parse_certificate

    pool = SyntheticPool(study["out"] / "pool")
    images, companions = pool.images(), pool.companions()
    assert companions.shape == images.shape and len(images) > 0
    certified = {}
    for bundle in pool.bundles(verified=True):
        cert = parse_certificate(bundle["certificate"]["certificate"])
        assert cert.companions.required
        for rec in cert.images:
            if rec.accepted:  # the companion cleared every threshold too
                assert all(rec.nn_distance_companion[m] >= t for m, t in cert.thresholds().items())
        certified.update(zip(cert.published, cert.published_companions(), strict=True))
    assert [certified[array_digest(x)] for x in images] == [array_digest(c) for c in companions]
    texture = np.abs(images - companions).mean(axis=(1, 2))
    assert (texture > 1e-4).all()  # the fine noise drawn last is what differs: the samples are the same
    corr = np.corrcoef(images.reshape(len(images), -1), companions.reshape(len(images), -1))[: len(images), len(images):]
    assert (corr.argmax(axis=1) == np.arange(len(images))).all()  # each image is nearest its own companion
    rep = json.loads((study["out"] / "report.json").read_text())
    assert rep["training"]["untextured-pool"]["samples"] > 0


def _fov(site: str) -> float:
    """The cohort scanner's field-of-view factor of a simulated site (the pixel size follows from it)."""
    from fedsynth.data.cohort import site_scanners

    return site_scanners("ct", 3, 0)[int(site.split("-")[1]) - 1].fov


def test_every_method_stops_on_validation_patients_and_states_its_effort(study):
    rep = json.loads((study["out"] / "report.json").read_text())
    models = ("synthetic-pool", "fedavg", "fedprox", "centralised-real", "phase-scrambled-pool", "untextured-pool",
              "local-site-1", "local-site-2", "local-site-3")
    for name in models:
        t = rep["training"][name]
        curve = t["curve"]
        assert 1 <= len(curve) <= 2, name  # tiny: at most 4 epochs, validated every 2
        best = [p for p in curve if p["best"]]
        assert len(best) == 1 and t["best_epoch"] == best[0]["epoch"], name
        assert best[0]["val_mse"] == min(p["val_mse"] for p in curve), name
        assert t["steps"] > 0 and t["samples"] > 0, name
    fedavg = rep["training"]["fedavg"]["curve"]
    if len(fedavg) == 2:  # the sites' Adam lived through both rounds (Context.state): its step count doubled
        assert fedavg[1]["steps"] == 2 * fedavg[0]["steps"]
        assert fedavg[1]["bytes"] > fedavg[0]["bytes"]
    assert rep["methods"]["degraded-input"]["pooled"]["n"] == rep["methods"]["fedavg"]["pooled"]["n"]
    assert rep["repeats"] == 1
    assert rep["machine"]["conv_gflops"] > 0  # the wall times come with the machine's measured speed
    # ... measured by `fedsynth simulate` before the simulated sites started, not while they boot
    probe = json.loads((study["out"] / "coordinator" / "machine.json").read_text())
    assert rep["machine"]["conv_gflops"] == probe["conv_gflops"]
    assert rep["per_patient"]["synthetic-pool"]["patients"] == ["site-1#0", "site-2#0", "site-3#0"]


def test_a_site_refuses_a_request_weaker_than_its_policy_and_the_report_says_why(study):
    """The coordinator asked for the 5th percentile; site-3's policy requires the 20th: nothing of it is pooled."""
    rep = json.loads((study["out"] / "report.json").read_text())
    row = rep["privacy"]["site-3"]
    assert row["n_published"] == 0
    assert "PolicyRefusal" in row["status"] and "percentile 5 is below the floor 20" in row["status"]
    assert "site-3" in rep["rejected_bundles"] and "site-3" not in rep["missing_sites"]
    assert "site-3" in rep["methods"]["fedavg"]["per_site"]  # it still takes part in the baselines
    from fedsynth.federation.pool import SyntheticPool

    assert SyntheticPool(study["out"] / "pool").sites() == ["site-1", "site-2"]


def _real_slices(out: Path):
    from fedsynth.data import ingest_configured_site
    from fedsynth.federation.study_dir import load_spec, simulated_site

    spec = load_spec(out)
    n = spec.scenario.cohort.sites
    return [ingest_configured_site(simulated_site(out, spec.scenario, k)) for k in range(1, n + 1)]


def test_no_real_slice_patient_id_or_path_leaves_a_site(study):
    stores = _real_slices(study["out"])
    real = np.concatenate([np.asarray(s.images) for s in stores])
    pids = {str(p) for s in stores for p in s.patient_ids}
    records = sorted(p for p in study["audit"].iterdir() if p.is_dir())
    kinds = {json.loads((r / "meta.json").read_text())["message_type"] for r in records}
    assert {"query.publish", "train", "evaluate", "query.ping"} <= kinds
    # one distinctive row (64+ bytes) of every real slice, as it would appear in a float32 payload
    rows = []
    for img in real:
        r = int(np.argmax(img.var(axis=1)))
        rows.append(np.ascontiguousarray(img[r], dtype="<f4").tobytes())
    secrets = [p.encode() for p in pids] + [str(study["root"]).encode(), b".nii"]
    flat = real.reshape(len(real), -1).astype(np.float64)
    for rec in records:
        wire = (rec / "wire.bin").read_bytes()
        for s in secrets:
            assert s not in wire, f"{s!r} in {rec.name}"
        for row in rows:
            assert row not in wire, f"a real slice row in {rec.name}"
        for npy in rec.glob("images.*.npy"):
            pub = np.load(npy).reshape(-1, flat.shape[1]).astype(np.float64)
            d2 = (pub**2).sum(1)[:, None] + (flat**2).sum(1)[None] - 2 * pub @ flat.T
            rmse = np.sqrt(np.maximum(d2, 0) / flat.shape[1])
            assert rmse.min() > 1e-3, f"a near-copy of a real slice in {rec.name}"


def test_every_listening_socket_is_loopback(study):
    assert study["sockets"], "no listening socket observed (Ray not running?)"
    import ipaddress

    def loopback(addr: str) -> bool:
        ip = ipaddress.ip_address(addr.rsplit(":", 1)[0].strip("[]"))
        mapped = getattr(ip, "ipv4_mapped", None)
        return ip.is_loopback or bool(mapped and mapped.is_loopback)

    bad = {a for a in study["sockets"] if not loopback(a)}
    assert not bad, f"sockets not on loopback: {sorted(bad)}"


def test_rerun_resumes_without_redoing_finished_work(study):
    from fedsynth.federation.simulation import run_simulated_study

    pool_before = sorted((study["out"] / "pool" / "objects").glob("*.npy"))
    t0 = time.perf_counter()
    report = run_simulated_study(study["scenario"], study["out"])
    assert time.perf_counter() - t0 < study["first_s"]
    assert sorted((study["out"] / "pool" / "objects").glob("*.npy")) == pool_before
    assert report["methods"]["fedavg"]["pooled"] == study["report"]["methods"]["fedavg"]["pooled"]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless Chromium not installed")
def test_the_live_page_of_the_study_shows_it_finished_with_its_certificates_and_report(study):
    """The page a coordinator opens, on the study that just ran: every phase done, each site's certificate, the report."""
    import re
    import subprocess
    import urllib.request

    from fedsynth.federation.live_page import LivePage

    page = LivePage(study["out"])
    url = page.start()
    try:
        dom = subprocess.run([shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu",
                              "--virtual-time-budget=5000", "--dump-dom", url], capture_output=True,
                             timeout=120).stdout.decode()
        with urllib.request.urlopen(url + "report.html", timeout=30) as r:  # noqa: S310 - loopback, this test's
            assert r.status == 200 and b"Verdicts" in r.read()
        with urllib.request.urlopen(url + "certificates/site-1", timeout=30) as r:  # noqa: S310
            assert json.loads(r.read())["certificate"]["binding"]["site_id"] == "site-1"
    finally:
        page.stop()
    visible = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", dom, flags=re.S)
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", visible))
    assert "fedsynth study: tiny" in text and "finished" in text
    assert text.count(" done ") >= 10 and " running " not in text and " waiting " not in text
    assert 'href="certificates/site-1"' in dom and 'href="report.html"' in dom and "<polyline" in dom
