"""Degradations: projection-domain low-dose CT, k-space truncation, blur+downsample, projector vs skimage."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures.images import body_discs

from fedsynth.errors import DataError
from fedsynth.tasks import TaskConfig, kspace_truncate, low_dose_ct, make_pairs
from fedsynth.tasks.projector import fbp_skimage, fbp_torch, radon_skimage, radon_torch
from fedsynth.tasks.sr_sim import blur_downsample, kspace_mask

# Stated tolerances for the torch projector against scikit-image (same geometry, bilinear sampling):
# sinograms agree to float32 rounding; FBP differs only by interpolation of the filtered projections.
SINO_REL_TOL = 1e-5
FBP_RMSE_TOL = 2e-3
FBP_MAX_TOL = 3e-2
#: Pixel edge (mm) of these small test images: 0.8 mm keeps line integrals short (no photon starvation).
PIX = 0.8


def test_torch_projector_matches_skimage() -> None:
    x = body_discs(2, 32, seed=3)
    st = radon_torch(torch.from_numpy(x), 48).numpy()
    ss = radon_skimage(x, 48)
    assert st.shape == ss.shape == (2, 48, 46)
    assert np.abs(st - ss).max() <= SINO_REL_TOL * np.abs(ss).max()
    rt = fbp_torch(torch.from_numpy(ss), 32).numpy()
    rs = fbp_skimage(ss, 32)
    assert np.sqrt(np.mean((rt - rs) ** 2)) < FBP_RMSE_TOL
    assert np.abs(rt - rs).max() < FBP_MAX_TOL
    # and FBP actually reconstructs the image (not just agrees with a broken reference)
    assert np.sqrt(np.mean((rt - x) ** 2)) < 0.03


def test_noise_variance_grows_as_dose_falls() -> None:
    imgs = body_discs(6, 32, seed=1)
    variances = []
    for dose in (1.0, 0.25, 0.05):
        low = low_dose_ct(imgs, pixel_mm=PIX, dose_fraction=dose, photons=1e5, seed=0)
        variances.append(float(np.var(low - imgs)))
    assert variances[0] < variances[1] < variances[2]
    # Poisson noise: variance of the log-transformed counts scales ~ 1 / dose
    assert 2.0 < variances[1] / variances[0] < 8.0
    assert 2.5 < variances[2] / variances[1] < 10.0


def test_low_dose_deterministic_and_projectors_agree() -> None:
    imgs = body_discs(2, 24, seed=2)
    a = low_dose_ct(imgs, pixel_mm=PIX, dose_fraction=0.1, seed=5)
    b = low_dose_ct(imgs, pixel_mm=PIX, dose_fraction=0.1, seed=5)
    c = low_dose_ct(imgs, pixel_mm=PIX, dose_fraction=0.1, seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    s = low_dose_ct(imgs, pixel_mm=PIX, dose_fraction=0.1, seed=5, projector="skimage")
    # same noise draws (same sinogram to ~1e-7), so the two reconstructions differ by interpolation only
    assert np.sqrt(np.mean((s - a) ** 2)) < 0.1 * np.sqrt(np.mean((a - imgs) ** 2))


def test_electronic_noise_adds_variance() -> None:
    imgs = body_discs(3, 24, seed=4)
    plain = low_dose_ct(imgs, pixel_mm=PIX, dose_fraction=0.25, seed=0)
    noisy = low_dose_ct(imgs, pixel_mm=PIX, dose_fraction=0.25, electronic_noise=20.0, seed=0)
    assert np.var(noisy - imgs) > np.var(plain - imgs)


@pytest.mark.parametrize("factor", [2, 4])
def test_kspace_truncation_removes_exactly_the_outer_frequencies(factor: int) -> None:
    rng = np.random.default_rng(0)
    h, w = 32, 24
    imgs = rng.random((3, h, w)).astype(np.float32)
    low = kspace_truncate(imgs, factor)
    spec_in = np.fft.fft2(imgs.astype(np.float64))
    spec_out = np.fft.fft2(low.astype(np.float64))
    ky = np.fft.fftfreq(h) * h
    kx = np.fft.fftfreq(w) * w
    keep = (np.abs(ky)[:, None] < h / (2 * factor)) & (np.abs(kx)[None, :] < w / (2 * factor))
    np.testing.assert_array_equal(kspace_mask((h, w), factor), keep)
    scale = np.abs(spec_in).max()
    assert np.abs(spec_out[:, ~keep]).max() < 1e-4 * scale  # removed
    assert np.abs(spec_out[:, keep] - spec_in[:, keep]).max() < 1e-4 * scale  # kept unchanged
    # the kept band is the central (H/f) x (W/f) block minus the unpaired Nyquist row/column
    assert keep.sum() == (h // factor - 1) * (w // factor - 1)
    # idempotent: truncating twice changes nothing
    np.testing.assert_allclose(kspace_truncate(low, factor), low, atol=1e-5)


def test_blur_downsample_keeps_low_frequencies_and_size() -> None:
    imgs = body_discs(2, 32, seed=0)
    low = blur_downsample(imgs, 2)
    assert low.shape == imgs.shape and low.dtype == np.float32
    # a smooth image survives mostly; a checkerboard (highest frequency) is wiped out
    assert np.sqrt(np.mean((low - imgs) ** 2)) < 0.1
    checker = (np.indices((32, 32)).sum(0) % 2).astype(np.float32)[None]
    assert np.std(blur_downsample(checker, 2)) < 0.05 * np.std(checker)
    with pytest.raises(ValueError, match="multiple"):
        blur_downsample(np.zeros((1, 30, 30), np.float32), 4)


def test_make_pairs_shapes_and_validation() -> None:
    imgs = body_discs(3, 32)
    for cfg in (TaskConfig(task="ldct"), TaskConfig(task="sr", sr_factor=4), TaskConfig(task="sr", sr_mode="blur")):
        x, y = make_pairs(imgs, cfg, seed=0, pixel_mm=PIX)
        assert x.shape == y.shape == imgs.shape
        assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
        np.testing.assert_array_equal(y, imgs)
        assert not np.allclose(x, y)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        make_pairs(imgs * 3, TaskConfig(task="sr"), 0)
    with pytest.raises(DataError, match="square"):
        make_pairs(np.zeros((2, 32, 16), np.float32), TaskConfig(task="ldct"), 0, PIX)
    with pytest.raises(DataError, match="pixel size"):  # no silent default for the physics
        make_pairs(imgs, TaskConfig(task="ldct"), 0)
    with pytest.raises(DataError, match="2 pixel sizes for 3 images"):
        make_pairs(imgs, TaskConfig(task="ldct"), 0, np.array([6.0, 6.0]))
    with pytest.raises(DataError, match="multiple"):
        make_pairs(np.zeros((2, 30, 30), np.float32), TaskConfig(task="sr", sr_factor=4), 0)
