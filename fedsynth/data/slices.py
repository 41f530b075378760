"""Volume → 2-D axial slices of a fixed size.

Axial slices are the unit everything downstream works on (the generator, the
gate, the denoisers). Near-empty slices (above the head, below the feet) are
dropped because they teach nothing and would make the gate's calibration
meaningless (all-air slices are "near-copies" of each other).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["FOREGROUND_LEVEL", "axial_pixel_mm", "axial_slices", "body_fractions", "resize_stack"]

#: A pixel counts as body when its normalised intensity exceeds this (CT: about -800 HU).
FOREGROUND_LEVEL = 0.1


def resize_stack(stack: np.ndarray, size: int) -> np.ndarray:
    """Resize (N, H, W) to (N, size, size), padding to square first so aspect is kept.

    Uses MONAI's ``Resize`` (area interpolation when shrinking, bilinear with
    anti-aliasing otherwise) with the slices as channels: one call per stack.
    """
    from monai.transforms import Resize

    stack = np.asarray(stack, dtype=np.float32)
    n, h, w = stack.shape
    if h != w:
        side = max(h, w)
        padded = np.zeros((n, side, side), dtype=np.float32)
        oy, ox = (side - h) // 2, (side - w) // 2
        padded[:, oy : oy + h, ox : ox + w] = stack
        stack = padded
    if stack.shape[1] == size:
        return np.ascontiguousarray(stack)
    mode = "area" if stack.shape[1] > size else "bilinear"
    kwargs = {} if mode == "area" else {"anti_aliasing": False, "align_corners": False}
    out = Resize(spatial_size=(size, size), mode=mode, **kwargs)(stack)
    out = np.asarray(out, dtype=np.float32)
    return np.clip(out, 0.0, 1.0)


def axial_pixel_mm(shape_xy: tuple[int, int], spacing_xy: tuple[float, float], size: int) -> float:
    """Pixel edge (mm) of the ``size``-pixel axial slices cut from a volume of ``shape_xy`` voxels.

    :func:`axial_slices` pads the slice to a square of ``max(X, Y)`` voxels
    before resizing, so that square's physical edge over ``size`` is the new
    pixel. With anisotropic in-plane voxels the geometric mean is returned
    (the resize does not resample physically; ingestion warns about it).
    """
    side = max(int(shape_xy[0]), int(shape_xy[1]))
    return float(side * math.sqrt(float(spacing_xy[0]) * float(spacing_xy[1])) / size)


def body_fractions(stack: np.ndarray) -> np.ndarray:
    """Share of pixels above :data:`FOREGROUND_LEVEL`, per slice."""
    return (stack > FOREGROUND_LEVEL).mean(axis=(1, 2))


def axial_slices(volume01: np.ndarray, size: int, body_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Cut a normalised canonical (X, Y, Z) volume into resized axial slices.

    Slices are displayed radiologically upright: rows run anterior→posterior,
    columns follow the array's X axis. Returns ``(slices, z_indices)`` for the
    slices whose body fraction is at least ``body_fraction``.
    """
    # (X, Y, Z) -> (Z, Y, X), then flip Y so anterior is at the top.
    stack = np.ascontiguousarray(np.transpose(volume01, (2, 1, 0))[:, ::-1, :])
    keep = np.flatnonzero(body_fractions(stack) >= body_fraction)
    if keep.size == 0:
        return np.zeros((0, size, size), dtype=np.float32), keep
    return resize_stack(stack[keep], size), keep
