"""Low-count PET simulated in the projection domain.

Why: a low-count scan (less injected activity, or shorter time per bed) has
fewer coincidences, and its noise is Poisson on those counts turned into
image texture by reconstruction; a denoiser must learn that noise, not
white Gaussian noise. The input of a pair is the clean slice plus the
reconstruction noise of a scan (:func:`fedsynth.data.cohort.scanner.pet_noise`,
the model the bundled PET cohort's scanners use) and the target is the slice
itself.

The slice is itself a full-count scan with ``counts`` coincidences, so its
own noise has variance proportional to ``1 / counts``. Thinning it to a
fraction ``f`` of the counts (keeping each coincidence with probability
``f``) leaves variance proportional to ``1 / (f counts)``; the missing part is
independent noise of a scan with ``counts * f / (1 - f)`` coincidences,
which is what is added (Gaussian approximation of binomial thinning).

    >>> low = low_count_pet(images, count_fraction=0.1, counts=2.5e5, seed=0)
"""

from __future__ import annotations

import numpy as np

from fedsynth.data.cohort.scanner import pet_noise

__all__ = ["low_count_pet"]


def low_count_pet(images: np.ndarray, *, count_fraction: float = 0.1, counts: float = 2.5e5, seed: int = 0,
                  postfilter_px: float = 1.0) -> np.ndarray:
    """Each ``[0, 1]`` slice of ``images`` (N, H, W) as a scan with ``count_fraction`` of its ``counts``; float32.

    Deterministic given ``seed``; clipped to ``[0, 1]`` like the ingested slices.
    """
    images = np.asarray(images, dtype=np.float32)
    if not 0.0 < count_fraction < 1.0:
        raise ValueError(f"count_fraction must be in (0, 1), got {count_fraction}")
    if images.ndim != 3:
        raise ValueError(f"low-count PET needs an (N, H, W) stack, got shape {images.shape}")
    extra = float(counts) * count_fraction / (1.0 - count_fraction)
    noise = pet_noise(images, extra, np.random.default_rng(seed), postfilter_px)
    return np.clip(images + noise, 0.0, 1.0).astype(np.float32)
