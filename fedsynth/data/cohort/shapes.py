"""Soft-edged 2-D primitives and smooth random fields for the digital patients.

Anatomy is painted slice by slice from ellipses whose outline is perturbed by
a few angular harmonics (organs are not ellipses) and whose edges are soft
(a logistic ramp about one pixel wide), so that resizing and blurring behave
like on a scanner's partial-volume edges rather than on aliased masks.
Coordinates are normalised: ``x`` runs left→right and ``y`` top→bottom of the
displayed slice over [-1, 1].
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = ["Grid", "blob", "paint", "ring_angles", "smooth_field", "smoothstep", "wobble"]


class Grid:
    """Normalised pixel-centre coordinates of a ``size``×``size`` slice.

    ``fov`` > 1 zooms out (a larger field of view makes the anatomy smaller),
    which is how sites with different reconstruction diameters differ.
    """

    def __init__(self, size: int, fov: float = 1.0) -> None:
        c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
        self.size = size
        self.x, self.y = np.meshgrid(c * fov, c * fov)
        #: One pixel in normalised units: sets the softness of every edge.
        self.px = 2.0 * fov / size


def wobble(rng: np.random.Generator, n: int = 4, amp: float = 0.06) -> np.ndarray:
    """Random angular harmonics (k = 2..n+1) for an organ outline: rows (k, amplitude, phase)."""
    k = np.arange(2, n + 2, dtype=np.float32)
    a = rng.normal(0.0, amp, n).astype(np.float32) / k
    p = rng.uniform(0.0, 2 * np.pi, n).astype(np.float32)
    return np.stack([k, a, p], axis=1)


def blob(
    g: Grid,
    cx: float,
    cy: float,
    ax: float,
    ay: float,
    theta: float = 0.0,
    harmonics: np.ndarray | None = None,
    soft: float = 1.0,
) -> np.ndarray:
    """Soft mask in [0, 1] of a rotated ellipse with a harmonically perturbed outline."""
    if ax <= 1e-4 or ay <= 1e-4:
        return np.zeros_like(g.x)
    dx, dy = g.x - cx, g.y - cy
    c, s = np.cos(theta), np.sin(theta)
    u, v = (c * dx + s * dy) / ax, (-s * dx + c * dy) / ay
    r = np.sqrt(u * u + v * v)
    radius = np.ones_like(r)
    if harmonics is not None and len(harmonics):
        phi = np.arctan2(v, u)
        for k, a, p in harmonics:
            radius = radius + a * np.cos(k * phi + p)
    # Signed distance to the outline, approximately in normalised units.
    d = (radius - r) * min(ax, ay)
    return (1.0 / (1.0 + np.exp(-np.clip(d / (0.5 * soft * g.px), -30, 30)))).astype(np.float32)


def paint(img: np.ndarray, mask: np.ndarray, value: float | np.ndarray) -> np.ndarray:
    """Lay tissue ``value`` over ``img`` where the soft ``mask`` is (partial volume at the edges)."""
    return img * (1.0 - mask) + value * mask


def ring_angles(rng: np.random.Generator, n: int, start: float, stop: float, jitter: float) -> np.ndarray:
    """``n`` angles spread over [start, stop] with jitter (ribs along the body wall)."""
    base = np.linspace(start, stop, n, dtype=np.float32)
    return base + rng.normal(0.0, jitter, n).astype(np.float32)


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma: float | tuple[float, ...]) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field (tissue texture, fat/bowel mixing)."""
    f = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    f -= f.mean()
    sd = float(f.std())
    return f / sd if sd > 0 else f


def smoothstep(z: np.ndarray | float, lo: float, hi: float) -> np.ndarray | float:
    """0 below ``lo``, 1 above ``hi``, a smooth ramp between (organs appear gradually along z)."""
    t = np.clip((np.asarray(z, dtype=np.float32) - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    return t * t * (3 - 2 * t)
