"""The learned copy detector: catches edited copies the exact metrics miss, fingerprinted, part of the gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fedsynth.errors import GateError
from fedsynth.privacy import GateConfig, PrivacyGate
from fedsynth.privacy.copy_detector import (
    CopyDetector,
    DetectorConfig,
    threat_edits,
    train_copy_detector,
)

SIZE, SLICES, TRAIN, NEW = 32, 12, 4, 2
CFG = DetectorConfig(steps=60, batch_size=32)  # mechanics only; what it catches is the slow test's


def _patients(n: int, seed: int) -> list[np.ndarray]:
    """``n`` CT patients (SLICES x SIZE x SIZE in [0, 1]) of one scanner of the bundled cohort."""
    from fedsynth.data.cohort import ct_patients

    return ct_patients(n, seed, SIZE, SLICES)


@pytest.fixture(scope="module")
def site() -> dict:
    vols = _patients(TRAIN + NEW + 2, seed=0)
    train = np.concatenate(vols[:TRAIN])
    groups = np.repeat([f"p{k}" for k in range(TRAIN)], SLICES)
    det = train_copy_detector(train, groups, CFG)
    return {"train": train, "groups": groups, "new": np.concatenate(vols[TRAIN:TRAIN + NEW]),
            "held": np.concatenate(vols[TRAIN + NEW:]), "det": det}


@pytest.mark.slow
def test_catches_edited_copies_the_exact_metrics_miss() -> None:
    """At a site like the benchmark's (64 px, 5 patients x 24 slices, the default detector): measured recall
    0.88-0.96 on 8-degree rotations and 0.96-1.00 on 2-px elastic warps, 3-6 % of new patients flagged (seeds 0-2)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import near_copies as bench

    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the detector's float sums depend on the thread count; CI has 2 cores
    try:
        _check_recall(bench)
    finally:
        torch.set_num_threads(threads)


def _check_recall(bench: Any) -> None:
    vols = bench._patients(bench.TRAIN + bench.NEW + 2, seed=0)
    train = np.concatenate(vols[: bench.TRAIN])
    groups = np.repeat([f"p{k}" for k in range(bench.TRAIN)], bench.SLICES)
    held, new = np.concatenate(vols[-2:]), np.concatenate(vols[bench.TRAIN : bench.TRAIN + bench.NEW])
    det = train_copy_detector(train, groups)
    grid = {"rotations_deg": [-5.0, -2.5, 2.5, 5.0], "scales": [0.95, 1.05]}
    exact = PrivacyGate(train, GateConfig(**grid), reference_groups=groups)
    learned = PrivacyGate(train, GateConfig(metrics=["pixel_rmse", "ncc_robust", "learned_copy"], **grid),
                          reference_groups=groups, detector=det, holdout=held)
    tau = learned.thresholds["learned_copy"]
    rng = np.random.default_rng(1)
    picks = rng.choice(len(train), size=24, replace=False)
    fams = {f[1]: f[3] for f in bench.families() if f[1] in ("8 deg", "2 px")}
    for strength, floor in (("8 deg", 0.75), ("2 px", 0.85)):
        copies = np.stack([np.clip(fams[strength](train[j], vols[j // bench.SLICES], j % bench.SLICES, rng), 0, 1)
                           for j in picks]).astype(np.float32)
        if strength == "8 deg":
            assert exact.check(copies).accepted.mean() >= 0.5  # the point: the exact metrics miss most of these
        assert np.mean(learned.check(copies).distances["learned_copy"] < tau) >= floor, strength
    # a guard against the collapse that flagged 32-79 % (leave-one-out calibration) or 58 % (patient classifier);
    # the measured share is 3-6 % over detector seeds, 15 % when trained with 1 thread
    assert np.mean(learned.check(new).distances["learned_copy"] < tau) <= 0.25


def test_calibrated_on_held_out_patients(site: dict) -> None:
    train, groups, det = site["train"], site["groups"], site["det"]
    cfg = GateConfig(metrics=["pixel_rmse", "learned_copy"])
    with pytest.raises(GateError, match="held-out"):
        PrivacyGate(train, cfg, reference_groups=groups, detector=det)
    gate = PrivacyGate(train, cfg, reference_groups=groups, detector=det, holdout=site["held"])
    cal = gate.metrics["learned_copy"]["calibration"]
    assert cal["n_queries"] == len(site["held"]) and cal["percentile"] == 5.0
    d, _ = gate.index.search("learned_copy", site["held"])
    assert gate.thresholds["learned_copy"] == pytest.approx(float(np.percentile(d, 5.0)))
    # the other metrics keep their leave-one-patient-out calibration
    assert "ci95_over_patients" in gate.metrics["pixel_rmse"]["calibration"]


def test_certificate_names_the_detector_and_the_gate_needs_one(site: dict) -> None:
    train, groups, det = site["train"], site["groups"], site["det"]
    cfg = GateConfig(metrics=["pixel_rmse", "learned_copy"])
    with pytest.raises(GateError, match="copy detector"):
        PrivacyGate(train, cfg, reference_groups=groups, holdout=site["held"])
    gate = PrivacyGate(train, cfg, reference_groups=groups, detector=det, holdout=site["held"])
    res = gate.run(lambda n: site["new"][:n], quota=4, max_attempts=8)
    entry = res.certificate.metrics["learned_copy"]
    assert entry.detector["fingerprint"] == det.fingerprint
    assert entry.detector["config"]["steps"] == CFG.steps
    # the certified distance is the float64 re-check of the found pair
    d = res.certificate.images[0].nn_distance["learned_copy"]
    assert 0.0 <= d <= 2.0


def test_checkpoint_roundtrip_and_tampering(site: dict, tmp_path: Path) -> None:
    det = site["det"]
    path = tmp_path / "det.pt"
    det.save(path)
    again = CopyDetector.load(path)
    assert again.fingerprint == det.fingerprint
    np.testing.assert_array_equal(again.embed(site["new"][:5]), det.embed(site["new"][:5]))
    ck = torch.load(path, weights_only=True)
    key = next(k for k in ck["state"] if k.endswith("weight"))
    ck["state"][key] = ck["state"][key] + 1e-3
    torch.save(ck, path)
    with pytest.raises(GateError, match="fingerprint"):
        CopyDetector.load(path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(GateError, match="not a readable copy detector"):
        CopyDetector.load(path)


def test_training_is_deterministic_and_learns(site: dict) -> None:
    small = DetectorConfig(steps=5, batch_size=8)
    a = train_copy_detector(site["train"][:24], site["groups"][:24], small)
    b = train_copy_detector(site["train"][:24], site["groups"][:24], small)
    assert a.fingerprint == b.fingerprint
    assert site["det"].training["final_loss"] < 0.95 * site["det"].training["first_loss"]  # 60 steps: 4.64 -> 4.06
    with pytest.raises(GateError, match="2 patients"):
        train_copy_detector(site["train"][:5], np.array(["p0"] * 5), small)


def test_threat_edits_stay_in_range_and_identity_at_zero_strength() -> None:
    x = torch.rand(6, 1, 32, 32)
    gen = torch.Generator().manual_seed(0)
    y = threat_edits(x, DetectorConfig(), gen)
    assert y.shape == x.shape and 0.0 <= float(y.min()) and float(y.max()) <= 1.0
    assert not torch.allclose(x, y)
    z = threat_edits(x, DetectorConfig(max_noise=0.0), torch.Generator().manual_seed(0), strength=0.0)
    assert torch.allclose(x, z, atol=1e-5)


def test_cli_gate_with_the_copy_detector(site: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fedsynth.cli import main

    np.savez(tmp_path / "real.npz", images=site["train"], groups=site["groups"])
    np.save(tmp_path / "cands.npy", site["new"][:6])
    np.save(tmp_path / "held.npy", site["held"])
    site["det"].save(tmp_path / "det.pt")
    base = ["gate", "--real", str(tmp_path / "real.npz"), "--synthetic", str(tmp_path / "cands.npy"),
            "--metrics", "pixel_rmse", "learned_copy"]
    assert main([*base, "--out", str(tmp_path / "o1"), "--copy-detector", str(tmp_path / "det.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs --copy-detector and --holdout" in err and "\n" not in err
    assert not (tmp_path / "o1").exists()
    rc = main([*base, "--out", str(tmp_path / "o2"), "--copy-detector", str(tmp_path / "det.pt"),
               "--holdout", str(tmp_path / "held.npy")])
    assert rc in (0, 3)  # some or none accepted: both write a certificate
    import json

    cert = json.loads((tmp_path / "o2" / "certificate.json").read_text())["certificate"]
    assert cert["metrics"]["learned_copy"]["detector"]["fingerprint"] == site["det"].fingerprint
