"""`fedsynth site train` killed part-way resumes exactly; corrupt checkpoints are one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fixtures.nifti import write_ct

from fedsynth.cli import main
from fedsynth.errors import CheckpointError
from fedsynth.generative import load_generator, load_profile, train_ldm

SETS = ["--set", "unet_epochs=4", "--set", "val_every=2"]


def _site(tmp: Path) -> Path:
    for i in range(5):  # 3 training, 1 validation, 1 test patient
        write_ct(tmp / "site" / f"p{i}.nii.gz", seed=i, shape=(40, 40, 6))
    return tmp / "site"


def _train_args(site: Path, work: Path) -> list[str]:
    return ["site", "train", "--site-dir", str(site), "--modality", "ct", "--profile", "tiny",
            "--workdir", str(work), "--size", "32", *SETS]


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("resume")
    site, work = _site(tmp), tmp / "w"
    cmd = [sys.executable, "-m", "fedsynth.cli", *_train_args(site, work)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})
    state = work / "train_state.pt"
    deadline = time.time() + 120
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # a real crash, right after the first epoch checkpoint
    proc.wait()
    assert state.exists(), proc.stderr.read().decode()[-2000:]
    assert not (work / "model.pt").exists(), "training finished before the kill; the test proves nothing"
    assert main([*_train_args(site, work), "--resume"]) == 0
    return tmp, site, work


def test_resumed_run_matches_uninterrupted(killed_and_resumed) -> None:
    tmp, _site_dir, work = killed_and_resumed
    import json

    from fedsynth.data import open_store

    store = open_store(json.loads((work / "store.json").read_text())["store"])
    cfg = load_profile("tiny", image_size=32, unet_epochs=4, val_every=2, seed=0)
    ref = train_ldm(store.train_images(), tmp / "ref", cfg, progress=False, validation=store.val_images())
    gen, ref_gen = load_generator(work), load_generator(tmp / "ref")
    got = json.loads((work / "summary.json").read_text())
    assert got["resumed"] and got["steps"] == ref["steps"] and got["n_validation"] == ref["n_validation"] > 0
    assert np.isfinite(got["final_unet_mse"])
    assert got["final_unet_mse"] == pytest.approx(ref["final_unet_mse"], rel=1e-2)
    # the validation checks (held-out loss, best epoch) continue across the kill as if there was none
    for a, b in zip(got["history"]["validation"], ref["history"]["validation"], strict=True):
        assert a["epoch"] == b["epoch"] and a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-3)
    assert got["best_epoch"] == ref["best_epoch"]
    np.testing.assert_allclose(gen.sample(4, seed=1), ref_gen.sample(4, seed=1), atol=2e-3)


def test_a_killed_latent_run_resumes_exactly_too(tmp_path, monkeypatch) -> None:
    """The latent generator's autoencoder stage, cut short by an exception, resumes to the same model."""
    from fixtures.images import spot_discs

    from fedsynth.generative import train as train_mod

    cfg = load_profile("tiny-latent", ae_epochs=3, unet_epochs=2)
    ref = train_ldm(spot_discs(12), tmp_path / "ref", cfg, progress=False)
    original = train_mod._Run.ae_epoch
    calls = {"n": 0}

    def crash_on_second(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self)

    with monkeypatch.context() as m:
        m.setattr(train_mod._Run, "ae_epoch", crash_on_second)
        with pytest.raises(KeyboardInterrupt):
            train_ldm(spot_discs(12), tmp_path / "cut", cfg, progress=False)
    got = train_ldm(spot_discs(12), tmp_path / "cut", cfg, progress=False, resume=True)
    assert got["resumed"] and got["steps"] == ref["steps"]
    assert got["final_ae_l1"] == pytest.approx(ref["final_ae_l1"], rel=1e-3)
    assert load_generator(tmp_path / "cut").scale == pytest.approx(load_generator(tmp_path / "ref").scale, rel=1e-3)


def test_cli_sample_and_evaluate(killed_and_resumed, tmp_path, capsys) -> None:
    _, _, work = killed_and_resumed
    out = tmp_path / "s.npy"
    assert main(["site", "sample", "--workdir", str(work), "--n", "3", "--out", str(out), "--steps", "5",
                 "--no-gate"]) == 0
    x = np.load(out)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    np.testing.assert_array_equal(x, load_generator(work).sample(3, steps=5))  # the generator's own sampler
    gated = tmp_path / "g.npy"
    assert main(["site", "sample", "--workdir", str(work), "--n", "2", "--out", str(gated), "--steps", "5"]) == 0
    assert np.load(gated).shape[1:] == (32, 32) and (tmp_path / "g.certificate.json").is_file()
    both = tmp_path / "b.npy"
    assert main(["site", "sample", "--workdir", str(work), "--n", "2", "--out", str(both), "--steps", "5",
                 "--gate-untextured"]) == 0
    cert = json.loads((tmp_path / "b.certificate.json").read_text())
    assert cert["companions"] == {"required": True, "checked": True}
    assert all("nn_distance_companion" in rec for rec in cert["images"])
    assert main(["site", "evaluate", "--workdir", str(work), "--n", "8", "--steps", "5",
                 "--out", str(tmp_path / "q")]) == 0
    assert (tmp_path / "q" / "quality.json").is_file() and (tmp_path / "q" / "nearest_real.png").is_file()
    quality = json.loads((tmp_path / "q" / "quality.json").read_text())
    assert len(quality["nearest_training"]["pixel_rmse"]) == 8  # each sample's nearest training slice, shown
    assert "two_sample" in quality  # computed, or skipped with its reason on this 4-patient site
    out = capsys.readouterr().out
    assert "noise power spectrum" in out and "two-sample" in out and "optimiser steps" in out


def test_corrupt_checkpoints_are_one_line_errors(killed_and_resumed, tmp_path, capsys) -> None:
    _, site, work = killed_and_resumed
    bad = tmp_path / "bad"
    shutil.copytree(work, bad)
    for name in ("model.pt", "train_state.pt"):
        data = (bad / name).read_bytes()
        (bad / name).write_bytes(data[: len(data) // 2])
    rc = main(["site", "sample", "--workdir", str(bad), "--n", "2", "--out", str(tmp_path / "x.npy"), "--no-gate"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "corrupt or truncated checkpoint" in err, err
    (bad / "model.pt").unlink()
    rc = main([*_train_args(site, bad), "--resume"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "train_state.pt" in err, err
    with pytest.raises(CheckpointError, match="no trained generator"):
        load_generator(tmp_path)


def test_site_fidelity_cli_reports_the_task_view_on_validation_patients(killed_and_resumed, tmp_path, capsys) -> None:
    """`fedsynth site-fidelity`: real vs samples vs companions on the validation patient, the input floor, the
    exact representation said, the noise spectrum and the effort, in one JSON."""
    _, _, work = killed_and_resumed
    out = tmp_path / "fid"
    assert main(["site-fidelity", "--workdir", str(work), "--task", "ldct", "--n", "8", "--max-epochs", "2",
                 "--check-every", "1", "--patience", "1", "--no-two-sample", "--out", str(out)]) == 0
    res = json.loads((out / "fidelity.json").read_text())
    value = res["task_value"]
    assert set(value["sets"]) == {"real", "samples", "companions"} and value["n_val_patients"] == 1
    assert value["gaps"]["representation"] == {"psnr": 0.0, "ssim": 0.0, "exact": True}
    assert np.isfinite(value["input"]["psnr"]) and value["sets"]["samples"]["n_train"] == 8
    assert res["training"]["optimizer_steps"]["diffusion"] > 0 and "validation" in res["training"]
    assert "real_val_vs_train" in res["noise_spectrum"] and "two_sample" not in res
    printed = capsys.readouterr().out
    assert "trained on real" in printed and "representation: exact" in printed
    assert main(["site-fidelity", "--workdir", str(work)]) == 2  # no task: a one-line error
    assert "--task is required" in capsys.readouterr().err
