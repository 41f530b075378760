"""Fan-beam CT projector (flat detector) and its filtered back-projection, batched in torch.

Why a second geometry: clinical CT scanners are fan-beam; the low-dose
protocol of the seed paper (1152 views over 360 degrees, I0 = 1e4) is defined
for one. Fan-beam rays through the patient's edge and centre have different
lengths from the parallel ones and the reconstruction weights the noise by
the distance to the source, so the noise texture differs.

Geometry (the convention of the ASTRA toolbox's ``fanflat``, against which
the projector is tested): pixel ``(row i, col j)`` of an ``N x N`` image sits
at ``x = j - (N-1)/2``, ``y = (N-1)/2 - i`` (unit = one pixel). For view
angle ``t`` the source is at ``R (sin t, -cos t)`` and the detector runs
along ``u = (cos t, sin t)``. Projections are indexed on a virtual detector
through the isocentre with bins one pixel apart (a real detector's bin is that
times the magnification ``SDD / R``; line integrals are the same). Distances
are in pixels: callers convert the scanner's millimetres with the image's
pixel size.

Reconstruction is the equispaced fan-beam FBP of Kak & Slaney (ch. 3.4.2):
cosine weighting ``R / sqrt(R^2 + s^2)``, the ramp filter of
:func:`~fedsynth.tasks.projector.ramp_filter`, and back-projection weighted
by ``1 / U^2`` with ``U = (R - X . a) / R``, ``a`` the unit vector to the
source. Grids are built per chunk of views, never all at once, so memory
stays bounded at 1152 views.

    >>> geo = FanGeometry.make(size=64, source_px=95.2, n_views=1152)
    >>> sino = fan_project(torch.rand(4, 64, 64), geo)   # (4, 1152, geo.n_det)
    >>> recon = fan_fbp(sino, geo)                       # (4, 64, 64)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fedsynth.tasks.projector import ramp_filter

__all__ = ["FanGeometry", "fan_fbp", "fan_project"]

#: Upper bound on floats materialised by one grid_sample call (64 MiB), to bound memory.
_MAX_SAMPLES = 1 << 24


@dataclass(frozen=True)
class FanGeometry:
    """A fan-beam scan of an ``size x size`` image: views over 360 degrees, distances in pixels."""

    size: int
    source_px: float  # source to isocentre
    n_views: int
    n_det: int  # virtual detector bins (odd, centred), one pixel apart

    @classmethod
    def make(cls, size: int, source_px: float, n_views: int) -> FanGeometry:
        """The geometry whose detector sees the whole image (its circumscribed circle) from every view.

        Raises ValueError when the source would sit inside that circle.
        """
        radius = (size - 1) / math.sqrt(2) + 1.0
        if source_px <= radius * 1.05:
            raise ValueError(f"fan beam: the source ({source_px:.1f} px from the isocentre) must lie outside "
                             f"the image's circle ({radius:.1f} px); the field of view is too large for the "
                             "source distance")
        s_max = source_px * radius / math.sqrt(source_px**2 - radius**2)
        return cls(size=size, source_px=float(source_px), n_views=int(n_views), n_det=2 * math.ceil(s_max) + 1)

    def angles(self) -> np.ndarray:
        """View angles in radians, equally spaced over [0, 2 pi)."""
        return np.arange(self.n_views, dtype=np.float64) * (2 * math.pi / self.n_views)

    def detector(self) -> np.ndarray:
        """Virtual detector positions (pixels from the centre ray)."""
        return np.arange(self.n_det, dtype=np.float64) - (self.n_det - 1) / 2

    @property
    def n_steps(self) -> int:
        """Samples per ray, one pixel apart, covering the image's diagonal."""
        return int(math.ceil(math.sqrt(2) * self.size)) + 2


def _to_grid(x: torch.Tensor, y: torch.Tensor, size: int) -> torch.Tensor:
    """Image-plane points -> grid_sample coordinates (align_corners=True)."""
    half = (size - 1) / 2
    scale = 2.0 / (size - 1)
    return torch.stack(((x + half) * scale - 1.0, (half - y) * scale - 1.0), dim=-1)


def _ray_grid(geo: FanGeometry, v0: int, v1: int, device: str) -> torch.Tensor:
    """Sample points (1, V*D, K, 2) of views v0..v1: for each view, detector bin and step along the ray."""
    t = torch.as_tensor(geo.angles()[v0:v1], dtype=torch.float64)[:, None, None]
    s = torch.as_tensor(geo.detector(), dtype=torch.float64)[None, :, None]
    sx, sy = geo.source_px * torch.sin(t), -geo.source_px * torch.cos(t)
    px, py = s * torch.cos(t), s * torch.sin(t)  # the bin on the virtual detector
    dx, dy = px - sx, py - sy
    norm = torch.sqrt(dx**2 + dy**2)
    dx, dy = dx / norm, dy / norm
    tc = -(sx * dx + sy * dy)  # distance from the source to the ray's closest approach to the centre
    k = torch.arange(geo.n_steps, dtype=torch.float64)[None, None, :] - (geo.n_steps - 1) / 2
    x, y = sx + (tc + k) * dx, sy + (tc + k) * dy
    grid = _to_grid(x, y, geo.size)  # (V, D, K, 2)
    return grid.reshape(1, (v1 - v0) * geo.n_det, geo.n_steps, 2).to(device=device, dtype=torch.float32)


def fan_project(images: torch.Tensor, geo: FanGeometry) -> torch.Tensor:
    """Fan-beam line integrals (unit = pixel edge) of ``images`` (B, N, N) -> (B, views, n_det)."""
    if images.ndim != 3 or images.shape[1] != geo.size or images.shape[2] != geo.size:
        raise ValueError(f"expected images (B, {geo.size}, {geo.size}), got {tuple(images.shape)}")
    b = images.shape[0]
    x = images.to(torch.float32).unsqueeze(0)  # (1, B, N, N): images as channels
    per_view = geo.n_det * geo.n_steps
    chunk = max(1, _MAX_SAMPLES // max(1, b * per_view))
    out = []
    for v0 in range(0, geo.n_views, chunk):
        v1 = min(geo.n_views, v0 + chunk)
        g = _ray_grid(geo, v0, v1, str(images.device))
        smp = F.grid_sample(x, g, mode="bilinear", padding_mode="zeros", align_corners=True)
        out.append(smp.view(b, v1 - v0, geo.n_det, geo.n_steps).sum(dim=3))
    return torch.cat(out, dim=1)


def _back_grid(geo: FanGeometry, v0: int, v1: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """For views v0..v1 and every pixel: grid (V, 1, N*N, 2) into the detector row, and the 1/U^2 weight (V, N*N)."""
    n = geo.size
    half = (n - 1) / 2
    rows, cols = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64),
                                indexing="ij")
    x, y = (cols - half).reshape(1, -1), (half - rows).reshape(1, -1)
    t = torch.as_tensor(geo.angles()[v0:v1], dtype=torch.float64)[:, None]
    r = geo.source_px
    length = r - (x * torch.sin(t) - y * torch.cos(t))  # source to the pixel, along the central ray
    s = r * (x * torch.cos(t) + y * torch.sin(t)) / length
    gx = (s + (geo.n_det - 1) / 2) * (2.0 / (geo.n_det - 1)) - 1.0
    grid = torch.stack((gx, torch.zeros_like(gx)), dim=-1).reshape(v1 - v0, 1, n * n, 2)
    weight = (r / length) ** 2
    return grid.to(device=device, dtype=torch.float32), weight.to(device=device, dtype=torch.float32)


def fan_fbp(sinograms: torch.Tensor, geo: FanGeometry) -> torch.Tensor:
    """Fan-beam filtered back-projection of (B, views, n_det) -> (B, N, N), same units as :func:`fan_project`."""
    b, n_views, n_det = sinograms.shape
    if n_views != geo.n_views or n_det != geo.n_det:
        raise ValueError(f"sinogram shape {(n_views, n_det)} does not match the geometry "
                         f"{(geo.n_views, geo.n_det)}")
    dev = sinograms.device
    s = torch.as_tensor(geo.detector(), dtype=torch.float32, device=dev)
    cosine = geo.source_px / torch.sqrt(geo.source_px**2 + s**2)
    n_fft = max(64, int(2 ** np.ceil(np.log2(2 * n_det))))
    filt = torch.as_tensor(ramp_filter(n_fft), dtype=torch.float32, device=dev)
    spec = torch.fft.fft(sinograms.to(torch.float32) * cosine, n=n_fft, dim=-1) * filt
    q = torch.fft.ifft(spec, dim=-1).real[..., :n_det]  # (B, V, D)
    q = q.permute(1, 0, 2).unsqueeze(2).contiguous()  # (V, B, 1, D): one "image" per view
    n2 = geo.size * geo.size
    chunk = max(1, _MAX_SAMPLES // max(1, b * n2))
    recon = torch.zeros(b, n2, dtype=torch.float32, device=dev)
    for v0 in range(0, n_views, chunk):
        v1 = min(n_views, v0 + chunk)
        grid, weight = _back_grid(geo, v0, v1, str(dev))
        smp = F.grid_sample(q[v0:v1], grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        recon += (smp.view(v1 - v0, b, n2) * weight[:, None, :]).sum(dim=0)
    return (recon * (math.pi / (2 * n_views))).view(b, geo.size, geo.size)
