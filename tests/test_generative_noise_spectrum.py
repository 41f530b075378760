"""The flat-region noise power spectrum: reads known noise right, and tells too smooth or too grainy apart."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from fedsynth.errors import DataError
from fedsynth.generative.noise_spectrum import compare_noise_spectra, noise_power_spectrum


def _phantoms(n: int, noise_sd: float, blur: float, seed: int) -> np.ndarray:
    """Smooth body discs with a few organs plus noise of a known SD and correlation (``blur`` px)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64] / 64.0
    out = np.empty((n, 64, 64))
    for i in range(n):
        img = np.where(((yy - 0.5) / 0.38) ** 2 + ((xx - 0.5) / 0.42) ** 2 < 1, 0.5, 0.0)
        for _ in range(3):
            cy, cx = rng.uniform(0.3, 0.7, 2)
            img = img + 0.1 * (((yy - cy) ** 2 + (xx - cx) ** 2) < 0.004)
        noise = rng.standard_normal((64, 64))
        if blur:
            noise = gaussian_filter(noise, blur)
        out[i] = gaussian_filter(img, 0.8) + noise_sd * noise / noise.std()
    return out.astype(np.float32)


def test_white_noise_reads_its_variance_in_every_band() -> None:
    x = _phantoms(40, 0.01, 0.0, seed=0)
    nps = noise_power_spectrum(x)
    # every band above the lowest reads the variance; the plane fit takes part of the lowest band's power
    # (on both sides of a comparison alike)
    assert nps["power"][1:] == pytest.approx([1e-4] * 3, rel=0.15)
    assert 0.4e-4 < nps["power"][0] < 0.9e-4 and nps["regions"] > 100


def test_correlated_noise_has_less_power_at_high_frequencies() -> None:
    p = noise_power_spectrum(_phantoms(40, 0.01, 0.7, seed=1))["power"]
    assert p[1] > p[2] > p[3] and p[3] < 0.3 * p[1]


def test_same_scanner_is_within_tolerance_and_wrong_noise_is_not() -> None:
    real = _phantoms(40, 0.01, 0.7, seed=2)
    same = compare_noise_spectra(_phantoms(40, 0.01, 0.7, seed=3), real)
    assert same["within"] and all(lo <= 1.0 <= hi for lo, hi in same["ci95"])
    smooth = compare_noise_spectra(gaussian_filter(real, (0, 1.0, 1.0)), real)
    assert not smooth["within"] and smooth["ratio"][3] < 0.3
    grainy = compare_noise_spectra(_phantoms(40, 0.01, 0.0, seed=4), real)  # white where real is correlated
    assert not grainy["within"] and grainy["ratio"][3] > 2.0 and grainy["ci95"][3][0] > 1.2


def test_no_body_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="no flat region"):
        noise_power_spectrum(np.zeros((3, 32, 32), np.float32))
    with pytest.raises(DataError, match="stack"):
        noise_power_spectrum(np.zeros((4, 4), np.float32))
