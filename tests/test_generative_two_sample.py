"""The classifier two-sample test: it sees what separates two sets, and nothing when nothing does."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures.images import body_discs
from scipy.ndimage import gaussian_filter

from fedsynth.errors import DataError
from fedsynth.generative.two_sample import real_vs_real_auc, two_sample_auc


@pytest.fixture(scope="module")
def patients():
    """12 "patients" x 8 body-like 32x32 slices, with scanner-like noise."""
    rng = np.random.default_rng(0)
    x = np.concatenate([body_discs(8, 32, seed=p) for p in range(12)])
    x = np.clip(x + rng.normal(0, 0.01, x.shape), 0, 1).astype(np.float32)
    return x, np.repeat([f"p{p}" for p in range(12)], 8)


def test_blurred_slices_are_told_apart(patients):
    x, g = patients
    first = np.isin(g, [f"p{p}" for p in range(6)])
    real, rg = x[first], g[first]
    fake = gaussian_filter(x[~first], sigma=(0, 1.0, 1.0))  # soft, noise-free: what a weak generator makes
    r = two_sample_auc(real, fake, a_groups=rg, epochs=6, seed=0)
    assert r["auc"] > 0.9, r
    assert len(r["folds"]) == 9 and r["ci95"][0] <= r["auc"] <= r["ci95"][1]


def test_sets_from_one_distribution_are_not(patients):
    x, g = patients
    r = real_vs_real_auc(x, g, epochs=6, seed=0)
    assert 0.2 < r["auc"] < 0.8, r  # the floor: patients differ a little, the classifier sees little
    again = real_vs_real_auc(x, g, epochs=6, seed=0)
    assert again["folds"] == r["folds"]  # seeded


def test_too_few_patients_or_slices_is_a_clear_error(patients):
    x, g = patients
    with pytest.raises(DataError, match="at least 3 groups"):
        two_sample_auc(x[:16], x[16:32], a_groups=g[:16])
    with pytest.raises(DataError, match="at least 6 slices"):
        two_sample_auc(x[:4], x[4:40])
    with pytest.raises(DataError, match="one image size"):
        two_sample_auc(x, x[:, :16, :16])
