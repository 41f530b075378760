"""(degraded input, clean target) pairs for a task, the same for real and synthetic images.

The one entry point :func:`make_pairs` is what training, evaluation and the
federation all call, so a network trained on synthetic images and one trained
on real images see inputs produced by the same code with the same settings.
"""

from __future__ import annotations

import numpy as np

from fedsynth.devices import resolve_device
from fedsynth.errors import DataError
from fedsynth.tasks.config import TaskConfig
from fedsynth.tasks.ct_sim import low_dose_ct
from fedsynth.tasks.sr_sim import blur_downsample, kspace_truncate

__all__ = ["check_images", "degrade", "make_pairs"]


def check_images(images: np.ndarray, what: str = "images") -> np.ndarray:
    """Validate an (N, H, W) stack in [0, 1]; return it as float32 (raises :class:`DataError`)."""
    arr = np.asarray(images)
    if arr.ndim != 3 or arr.shape[0] == 0:
        raise DataError(f"{what}: expected a non-empty (N, H, W) stack, got shape {arr.shape}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise DataError(f"{what}: contains NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-4 or hi > 1 + 1e-4:
        raise DataError(f"{what}: values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]")
    return arr


def degrade(images: np.ndarray, cfg: TaskConfig, seed: int) -> np.ndarray:
    """The degraded version of each clean image (same shape, float32, clipped to [0, 1])."""
    images = check_images(images)
    if cfg.task == "ldct":
        if images.shape[1] != images.shape[2]:
            raise DataError(f"low-dose CT needs square slices, got {images.shape[1]}x{images.shape[2]}")
        return low_dose_ct(
            images,
            dose_fraction=cfg.dose_fraction,
            photons=cfg.photons,
            electronic_noise=cfg.electronic_noise,
            pixel_size_mm=cfg.pixel_size_mm,
            mu_water=cfg.mu_water,
            hu_window=cfg.hu_window,
            n_angles=cfg.n_angles,
            projector=cfg.projector,
            seed=seed,
            device=resolve_device(cfg.device).type,
        )
    h, w = images.shape[1:]
    if h % cfg.sr_factor or w % cfg.sr_factor:
        raise DataError(f"image size {h}x{w} is not a multiple of sr_factor {cfg.sr_factor}")
    if cfg.sr_mode == "kspace":
        low = kspace_truncate(images, cfg.sr_factor)
    else:
        low = blur_downsample(images, cfg.sr_factor, cfg.blur_sigma)
    return np.clip(low, 0.0, 1.0)


def make_pairs(images: np.ndarray, cfg: TaskConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) for ``images`` (N, H, W) in [0, 1]: degraded inputs and the clean images.

    Both are float32 (N, H, W) on the same grid (for SR the input is the
    low-resolution image brought back to H x W). Deterministic given ``seed``.
    """
    targets = check_images(images)
    return degrade(targets, cfg, seed), targets
