"""Tiny synthetic image stacks for the tasks/report tests: smooth random blobs in [0, 1]."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter


def blobs(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """``n`` smooth, body-like images (N, size, size) float32 in [0, 1]: a disc with soft blobs inside."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    disc = (xx**2 + yy**2 < (0.42 * size) ** 2).astype(np.float64)
    out = np.empty((n, size, size), dtype=np.float32)
    for i in range(n):
        tex = gaussian_filter(rng.random((size, size)), sigma=size / 10)
        tex = (tex - tex.min()) / (np.ptp(tex) + 1e-9)
        img = disc * (0.45 + 0.25 * tex)
        out[i] = np.clip(gaussian_filter(img, 0.7), 0.0, 1.0)
    return out
