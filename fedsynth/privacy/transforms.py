"""The gate's declared geometric transform grid: small rotations, scalings and half-pixel shifts of the references.

Why the references and not a new metric: a near-copy that is a real slice
rotated by 3 degrees or zoomed by 4 % is far from that slice in pixels, so
every metric misses it (benchmarks/near_copies.py measured 30 % recall at 4
degrees, 0 % at an 8 % zoom before this grid). Adding each reference's
transformed variants to the reference set makes every metric the minimum over
the grid: a candidate is certified at least the threshold away from every
real slice *and from every grid transform of it*. The search stays exact (the
variants are just more references, searched by the same provable bounds and
exact re-check); the cost grows linearly with the grid's size. Between grid
points the guarantee is the metric's own tolerance (a 1-degree residual
rotation is well inside the calibrated thresholds; the benchmark shows it).
Integer shifts, flips and intensity maps stay with ``ncc_robust``.

Variants are consecutive: reference ``i`` has variants ``i * k ... i * k +
k - 1`` (``k = len(grid)``, variant 0 the reference itself), so an index into
the augmented set maps back to its real slice by ``// k``.

    >>> grid = transform_grid(cfg)          # [(0.0, 1.0, (0.0, 0.0)), (-5.0, 1.0, (0.0, 0.0)), ...]
    >>> refs_aug = augment(refs, grid)
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

__all__ = ["IDENTITY", "Transform", "augment", "describe", "transform_grid"]

#: (rotation in degrees, scale, (dy, dx) shift in pixels), about the image centre.
Transform = tuple[float, float, tuple[float, float]]

_HALF_PIXEL = ((0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.5, 0.5))

#: The transform that leaves a reference as it is.
IDENTITY: Transform = (0.0, 1.0, (0.0, 0.0))


def transform_grid(cfg: Any) -> list[Transform]:
    """Every (rotation, scale, shift) of ``cfg``'s grid; the identity first."""
    rots = [0.0, *[float(r) for r in cfg.rotations_deg if r != 0]]
    scales = [1.0, *[float(s) for s in cfg.scales if s != 1]]
    shifts = list(_HALF_PIXEL) if cfg.subpixel_shifts else [(0.0, 0.0)]
    return [(r, s, sh) for r, s, sh in itertools.product(rots, scales, shifts)]


def describe(cfg: Any) -> str:
    """The grid in words, for the metric definitions a certificate carries."""
    parts = []
    if cfg.rotations_deg:
        parts.append(f"rotations {sorted({0.0, *map(float, cfg.rotations_deg)})} deg")
    if cfg.scales:
        parts.append(f"scales {sorted({1.0, *map(float, cfg.scales)})}")
    if cfg.subpixel_shifts:
        parts.append("half-pixel shifts {0, 0.5}^2")
    return ("; minimum over every reference under the grid " + " x ".join(parts)
            + " (bilinear, about the centre, edges extended)") if parts else ""


def _warp(image: np.ndarray, t: Transform) -> np.ndarray:
    from scipy import ndimage

    angle, scale, shift = t
    if angle == 0 and scale == 1 and shift == (0.0, 0.0):
        return image
    a = np.deg2rad(angle)
    m = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) / scale
    c = (np.array(image.shape, dtype=np.float64) - 1) / 2
    offset = c - m @ (c + np.asarray(shift, dtype=np.float64))
    return ndimage.affine_transform(image, m, offset=offset, order=1, mode="nearest")


def augment(references: np.ndarray, grid: list[Transform]) -> np.ndarray:
    """(N, H, W) references -> (N * len(grid), H, W) float32, each reference's variants consecutive."""
    refs = np.asarray(references, dtype=np.float32)
    if not grid or grid == [IDENTITY]:
        return refs
    out = np.empty((len(refs) * len(grid), *refs.shape[1:]), dtype=np.float32)
    for i, ref in enumerate(refs.astype(np.float64)):
        for j, t in enumerate(grid):
            out[i * len(grid) + j] = _warp(ref, t)
    return out
