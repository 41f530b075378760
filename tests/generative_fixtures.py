"""Tiny synthetic slices and a tiny trained generator for the generative tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def blobs(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """(n, size, size) float32 in [0, 1]: a bright disc with a dark spot at random places, on a dim background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    out = np.empty((n, size, size), np.float32)
    for i in range(n):
        cy, cx, r = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65), rng.uniform(0.2, 0.3)
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        img = 0.1 + 0.6 / (1 + np.exp((np.sqrt(d2) - r) * 40))
        sy, sx = rng.uniform(0.3, 0.7, 2)
        img -= 0.4 * np.exp(-((yy - sy) ** 2 + (xx - sx) ** 2) / 0.004)
        out[i] = np.clip(img, 0, 1)
    return out


TINY = dict(image_size=32, ae_epochs=12, unet_epochs=6)


def train_tiny(workdir: Path, n: int = 16, **overrides) -> dict:
    """Train the tiny profile on ``n`` blobs; returns the summary."""
    from fedsynth.generative import load_profile, train_ldm

    return train_ldm(blobs(n), workdir, load_profile("tiny", **{**TINY, **overrides}), progress=False)
