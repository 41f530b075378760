"""Low-dose CT simulated in the projection domain.

Why in the projection domain: real dose reduction raises quantum (Poisson)
noise on the detector's photon counts, and filtered back-projection turns that
into the streaky, spatially correlated noise texture of low-dose CT. Adding
white Gaussian noise to the image would teach a denoiser the wrong noise.

Steps per image (identical for real and synthetic images):
``[0, 1]`` -> HU (the ingestion window, by default -1000..1000 HU) -> linear
attenuation ``mu = mu_w (1 + HU/1000)`` -> line integrals ``p`` (parallel
beam over 180 degrees, or fan beam over 360 degrees with a flat detector,
:mod:`.projector_fan`) -> expected counts ``I = I0 * dose * exp(-p)`` -> Poisson counts plus
optional Gaussian electronic noise -> ``-log(counts / (I0 * dose))`` -> FBP ->
HU -> ``[0, 1]`` (clipped, like the ingested images).

The returned image is the clean image plus the *noise* of the low-dose scan:
``x + FBP(p_noisy) - FBP(p_clean)``. This keeps FBP's own discretisation blur
(which is not dose-dependent) out of the pairs, so the denoiser learns dose
noise and nothing else, exactly as the Mayo pairs differ only in dose.

The path length of a ray depends on the pixel's physical size, so every
image comes with its own ``pixel_mm`` (from its volume's voxel spacing, via
the slice store): a 64-pixel slice of a 400 mm field of view has 6.25 mm
pixels and rays through the torso reach line integrals of ~6 (transmission
~0.2 %), where photon starvation makes the noise streaky and
non-stationary, as in real low-dose CT.

    >>> low = low_dose_ct(images, pixel_mm=6.25, dose_fraction=0.25, photons=1e5, seed=0)
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from fedsynth.tasks.projector import (
    default_n_angles,
    fbp_skimage,
    fbp_torch,
    radon_skimage,
    radon_torch,
)
from fedsynth.tasks.projector_fan import FanGeometry, fan_fbp, fan_project

__all__ = ["FAN_VIEWS", "SIEMENS_SID_MM", "hu_to_unit", "low_dose_ct", "unit_to_hu"]

#: Fan-beam defaults: views over 360 degrees (the seed paper's protocol) and the source-to-isocentre
#: distance of a Siemens SOMATOM Definition (the scanner of the AAPM/Mayo low-dose set). The
#: source-to-detector distance (1085.6 mm) only scales the detector bins, not the line integrals.
FAN_VIEWS = 1152
SIEMENS_SID_MM = 595.0

log = logging.getLogger(__name__)


def unit_to_hu(x: np.ndarray, hu_window: tuple[float, float] = (-1000.0, 1000.0)) -> np.ndarray:
    """Invert the ingestion window: ``[0, 1]`` -> Hounsfield units."""
    lo, hi = hu_window
    return x * (hi - lo) + lo


def hu_to_unit(hu: np.ndarray, hu_window: tuple[float, float] = (-1000.0, 1000.0)) -> np.ndarray:
    """Apply the ingestion window: Hounsfield units -> ``[0, 1]`` (not clipped)."""
    lo, hi = hu_window
    return (hu - lo) / (hi - lo)


def _scanner(
    geometry: str, projector: str, size: int, n_angles: int, source_px: float, device: str
) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]:
    """``(project, reconstruct)`` of one geometry on ``size``-pixel images, numpy in and out.

    ``source_px``: the fan's source-to-isocentre distance in pixels (ignored for parallel beam).
    """
    if geometry == "fan":
        geo = FanGeometry.make(size, source_px, n_angles)
        return (lambda a: fan_project(torch.from_numpy(a).to(device), geo).cpu().numpy(),
                lambda s: fan_fbp(torch.from_numpy(s).to(device), geo).cpu().numpy())
    if projector == "torch":
        return (lambda a: radon_torch(torch.from_numpy(a).to(device), n_angles).cpu().numpy(),
                lambda s: fbp_torch(torch.from_numpy(s).to(device), size).cpu().numpy())
    return (lambda a: radon_skimage(a, n_angles), lambda s: fbp_skimage(s, size))


def low_dose_ct(
    images: np.ndarray,
    *,
    pixel_mm: float | np.ndarray,
    dose_fraction: float = 0.25,
    photons: float = 1e5,
    electronic_noise: float = 0.0,
    mu_water: float = 0.0192,
    hu_window: tuple[float, float] = (-1000.0, 1000.0),
    geometry: str = "parallel",
    n_angles: int | None = None,
    source_mm: float = SIEMENS_SID_MM,
    projector: str = "torch",
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = 32,
) -> np.ndarray:
    """Simulate a low-dose scan of each ``[0, 1]`` image in ``images`` (N, H, H); returns float32 (N, H, H).

    ``pixel_mm`` is the pixel edge in mm, one value for all images or one per
    image. ``geometry = "fan"`` scans ``n_angles`` views (default
    :data:`FAN_VIEWS`) over 360 degrees from a source ``source_mm`` from the
    isocentre; ``"parallel"`` scans ``n_angles`` (default angular Nyquist)
    over 180 degrees. Deterministic given ``seed`` (noise is drawn by one numpy
    generator, batch by batch in order).
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"low-dose CT needs square slices (N, H, H), got shape {images.shape}")
    n, size = images.shape[0], images.shape[1]
    pix = np.broadcast_to(np.asarray(pixel_mm, dtype=np.float64), (n,))
    if not (np.isfinite(pix).all() and (pix > 0).all()):
        raise ValueError("low-dose CT: every pixel size must be a positive number of mm")
    if geometry not in ("parallel", "fan"):
        raise ValueError(f"unknown geometry {geometry!r}")
    if geometry == "fan" and projector != "torch":
        raise ValueError("the fan-beam geometry has only the torch projector")
    if projector not in ("torch", "skimage"):
        raise ValueError(f"unknown projector {projector!r}")
    n_angles = n_angles or (FAN_VIEWS if geometry == "fan" else default_n_angles(size))
    i0 = float(photons) * float(dose_fraction)
    rng = np.random.default_rng(seed)
    out = np.empty_like(images)
    # Batches never mix pixel sizes: a fan-beam geometry (distances in pixels) is one per pixel size.
    starts = [0] + [int(i) for i in np.flatnonzero(np.diff(pix) != 0) + 1] + [n]
    for g0, g1 in zip(starts[:-1], starts[1:], strict=False):
        mm = float(pix[g0])
        project, reconstruct = _scanner(geometry, projector, size, n_angles, source_mm / mm, device)
        for start in range(g0, g1, batch_size):
            x = images[start : min(g1, start + batch_size)]
            hu = unit_to_hu(x.astype(np.float64), hu_window)
            mu = np.clip(mu_water * (1.0 + hu / 1000.0), 0.0, None).astype(np.float32)
            p_clean = project(mu).astype(np.float64) * mm  # line integrals, dimensionless
            counts = rng.poisson(i0 * np.exp(-p_clean)).astype(np.float64)
            if electronic_noise > 0:
                counts += rng.normal(0.0, electronic_noise, size=counts.shape)
            p_noisy = -np.log(np.clip(counts, 1.0, None) / i0)
            # Reconstruct only the noise, in attenuation units (1/mm), then convert to HU.
            dmu = reconstruct(((p_noisy - p_clean) / mm).astype(np.float32))
            noisy_hu = hu + 1000.0 * dmu / mu_water
            out[start : start + len(x)] = np.clip(hu_to_unit(noisy_hu, hu_window), 0.0, 1.0)
    return out
