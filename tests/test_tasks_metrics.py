"""Per-image metrics against hand-computed values (data_range = 1)."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures.images import body_discs

from fedsynth.tasks import DATA_RANGE, image_metrics


def test_data_range_is_one() -> None:
    assert DATA_RANGE == 1.0


def test_psnr_rmse_hand_computed() -> None:
    target = np.full((2, 16, 16), 0.5, np.float32)
    pred = target.copy()
    pred[0] += 0.1  # uniform error 0.1 -> MSE 0.01 -> PSNR 20 dB, RMSE 0.1
    pred[1, :8] += 0.2  # half the pixels off by 0.2 -> MSE 0.02
    m = image_metrics(pred, target, hu_window=(-1000.0, 1000.0))
    np.testing.assert_allclose(m["rmse"], [0.1, np.sqrt(0.02)], rtol=1e-5)
    np.testing.assert_allclose(m["psnr"], [20.0, 10 * np.log10(1 / 0.02)], rtol=1e-5)
    np.testing.assert_allclose(m["rmse_hu"], [200.0, 2000 * np.sqrt(0.02)], rtol=1e-5)


def test_ssim_hand_computed_constant_images() -> None:
    # constant images: only the luminance term survives, SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01 * 1)^2
    a, b = 0.5, 0.3
    m = image_metrics(np.full((1, 16, 16), b, np.float32), np.full((1, 16, 16), a, np.float32))
    c1 = (0.01 * DATA_RANGE) ** 2
    assert m["ssim"][0] == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=2e-4)
    same = image_metrics(np.full((1, 16, 16), a, np.float32), np.full((1, 16, 16), a, np.float32))
    assert same["ssim"][0] == pytest.approx(1.0) and same["rmse"][0] == 0.0 and np.isinf(same["psnr"][0])


def test_ssim_matches_skimage_gaussian_ssim() -> None:
    from skimage.metrics import structural_similarity

    target = body_discs(2, 32, seed=0)
    pred = np.clip(target + np.random.default_rng(0).normal(0, 0.05, target.shape), 0, 1).astype(np.float32)
    m = image_metrics(pred, target)
    ref = [
        structural_similarity(
            t, p, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, win_size=11
        )
        for p, t in zip(pred.astype(np.float64), target.astype(np.float64), strict=True)
    ]
    np.testing.assert_allclose(m["ssim"], ref, atol=0.02)
    assert (m["ssim"] < 1).all() and (m["ssim"] > 0).all()


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="must both be"):
        image_metrics(np.zeros((1, 8, 8)), np.zeros((1, 8, 9)))
