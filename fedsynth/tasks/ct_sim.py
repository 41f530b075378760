"""Low-dose CT simulated in the projection domain.

Why in the projection domain: real dose reduction raises quantum (Poisson)
noise on the detector's photon counts, and filtered back-projection turns that
into the streaky, spatially correlated noise texture of low-dose CT. Adding
white Gaussian noise to the image would teach a denoiser the wrong noise.

Steps per image (identical for real and synthetic images):
``[0, 1]`` -> HU (the ingestion window, by default -1000..1000 HU) -> linear
attenuation ``mu = mu_w (1 + HU/1000)`` -> parallel-beam line integrals
``p`` -> expected counts ``I = I0 * dose * exp(-p)`` -> Poisson counts plus
optional Gaussian electronic noise -> ``-log(counts / (I0 * dose))`` -> FBP ->
HU -> ``[0, 1]`` (clipped, like the ingested images).

The returned image is the clean image plus the *noise* of the low-dose scan:
``x + FBP(p_noisy) - FBP(p_clean)``. This keeps FBP's own discretisation blur
(which is not dose-dependent) out of the pairs, so the denoiser learns dose
noise and nothing else, exactly as the Mayo pairs differ only in dose.

    >>> low = low_dose_ct(images, dose_fraction=0.25, photons=1e5, seed=0)
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from fedsynth.tasks.projector import (
    default_n_angles,
    fbp_skimage,
    fbp_torch,
    radon_skimage,
    radon_torch,
)

__all__ = ["hu_to_unit", "low_dose_ct", "unit_to_hu"]

log = logging.getLogger(__name__)


def unit_to_hu(x: np.ndarray, hu_window: tuple[float, float] = (-1000.0, 1000.0)) -> np.ndarray:
    """Invert the ingestion window: ``[0, 1]`` -> Hounsfield units."""
    lo, hi = hu_window
    return x * (hi - lo) + lo


def hu_to_unit(hu: np.ndarray, hu_window: tuple[float, float] = (-1000.0, 1000.0)) -> np.ndarray:
    """Apply the ingestion window: Hounsfield units -> ``[0, 1]`` (not clipped)."""
    lo, hi = hu_window
    return (hu - lo) / (hi - lo)


def low_dose_ct(
    images: np.ndarray,
    *,
    dose_fraction: float = 0.25,
    photons: float = 1e5,
    electronic_noise: float = 0.0,
    pixel_size_mm: float = 0.8,
    mu_water: float = 0.0192,
    hu_window: tuple[float, float] = (-1000.0, 1000.0),
    n_angles: int | None = None,
    projector: str = "torch",
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = 32,
) -> np.ndarray:
    """Simulate a low-dose scan of each ``[0, 1]`` image in ``images`` (N, H, H); returns float32 (N, H, H).

    Deterministic given ``seed`` (noise is drawn by one numpy generator, batch by batch in order).
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"low-dose CT needs square slices (N, H, H), got shape {images.shape}")
    size = images.shape[1]
    n_angles = n_angles or default_n_angles(size)
    i0 = float(photons) * float(dose_fraction)
    rng = np.random.default_rng(seed)
    out = np.empty_like(images)
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]
        hu = unit_to_hu(x.astype(np.float64), hu_window)
        mu = np.clip(mu_water * (1.0 + hu / 1000.0), 0.0, None).astype(np.float32)
        if projector == "torch":
            sino = radon_torch(torch.from_numpy(mu).to(device), n_angles).cpu().numpy()
        elif projector == "skimage":
            sino = radon_skimage(mu, n_angles)
        else:
            raise ValueError(f"unknown projector {projector!r}")
        p_clean = sino.astype(np.float64) * pixel_size_mm  # line integrals, dimensionless
        counts = rng.poisson(i0 * np.exp(-p_clean)).astype(np.float64)
        if electronic_noise > 0:
            counts += rng.normal(0.0, electronic_noise, size=counts.shape)
        p_noisy = -np.log(np.clip(counts, 1.0, None) / i0)
        # Reconstruct only the noise, in attenuation units (1/mm), then convert to HU.
        dp = ((p_noisy - p_clean) / pixel_size_mm).astype(np.float32)
        if projector == "torch":
            dmu = fbp_torch(torch.from_numpy(dp).to(device), size).cpu().numpy()
        else:
            dmu = fbp_skimage(dp, size)
        noisy_hu = hu + 1000.0 * dmu / mu_water
        out[start : start + len(x)] = np.clip(hu_to_unit(noisy_hu, hu_window), 0.0, 1.0)
    return out
