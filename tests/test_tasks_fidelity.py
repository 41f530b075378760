"""The task's view of a training set: validated on validation patients, gaps per patient against real slices."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from fedsynth.tasks import Budget, TaskConfig
from fedsynth.tasks.fidelity import task_value

CFG = dict(task="ldct", network="rednet", channels=8, patch_size=24, batch_size=16, dose_fraction=0.1)


@pytest.fixture(scope="module")
def cohort():
    from fedsynth.data.cohort import ct_patients

    vols = ct_patients(5, size=32, slices=8)
    train, val = np.concatenate(vols[:3]), np.concatenate(vols[3:])
    val_ids = np.repeat(["pa", "pb"], 8)
    return train, val, val_ids


def test_every_set_is_scored_per_validation_patient_beside_the_input(cohort) -> None:
    train, val, val_ids = cohort
    cfg = TaskConfig(**CFG, patches_per_image=2)
    res = task_value({"real": (train, 12.5), "flipped": (train[:, :, ::-1].copy(), 12.5)}, val, 12.5, val_ids, cfg,
                     Budget(max_epochs=2, check_every=1, patience=1), seeds=2)
    assert res["n_val_patients"] == 2 and res["n_val_slices"] == 16 and res["seeds"] == 2
    real, flipped = res["sets"]["real"], res["sets"]["flipped"]
    assert len(real["per_seed"]) == 2 and set(real["per_patient"]) == {"pa", "pb"}
    assert real["psnr"] == pytest.approx(np.mean(list(real["per_patient"].values())))  # equal slices per patient
    gap = res["gaps"]["flipped"]
    assert gap["psnr"] == pytest.approx(flipped["psnr"] - real["psnr"])
    for p in ("pa", "pb"):
        assert gap["per_patient"][p] == pytest.approx(flipped["per_patient"][p] - real["per_patient"][p])
    assert np.isfinite(res["input"]["psnr"]) and "real" not in res["gaps"]


@pytest.mark.slow
def test_over_smooth_targets_lose_to_real_ones_on_every_validation_patient(cohort) -> None:
    """A representation that blurs the anatomy teaches the denoiser to blur: its ceiling is below real."""
    train, val, val_ids = cohort
    cfg = TaskConfig(**CFG, patches_per_image=24)
    blurred = gaussian_filter(train, (0, 1.2, 1.2)).astype(np.float32)
    res = task_value({"real": (train, 12.5), "blurred": (blurred, 12.5)}, val, 12.5, val_ids, cfg,
                     Budget(max_epochs=20, check_every=2, patience=3), seeds=1)
    assert res["sets"]["real"]["psnr"] > res["input"]["psnr"]  # the network learned from real targets
    gap = res["gaps"]["blurred"]
    assert gap["psnr"] < -1.0 and all(v < 0 for v in gap["per_patient"].values())
