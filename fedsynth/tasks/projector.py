"""Parallel-beam CT projector and filtered back-projection, batched in torch.

The low-dose simulation projects and reconstructs every training image, so
the projector is on the hot path. scikit-image's ``radon``/``iradon`` loop over
angles in Python, one image at a time; here all angles of a batch of images
go through one ``torch.nn.functional.grid_sample`` call (images ride in the
channel dimension so the sampling grid is built once), and the ramp filter is
one FFT. Geometry, padding and filter follow scikit-image exactly
(``circle=False``: the image is zero-padded to its diagonal), so the two agree
to interpolation error; :func:`radon_skimage`/:func:`fbp_skimage` wrap the
reference for tests and benchmarks.

Shapes: images ``(B, N, N)``; sinograms ``(B, A, D)`` with ``A`` angles over
[0, 180) degrees and ``D`` detector bins of one pixel (``D`` = padded size).

    >>> sino = radon_torch(torch.rand(4, 64, 64), n_angles=90)   # (4, 90, 91)
    >>> recon = fbp_torch(sino, size=64)                          # (4, 64, 64)
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "angles_deg",
    "default_n_angles",
    "detector_size",
    "fbp_skimage",
    "fbp_torch",
    "radon_skimage",
    "radon_torch",
    "ramp_filter",
]

#: Upper bound on floats materialised by one grid_sample call (64 MiB), to bound memory.
_MAX_SAMPLES = 1 << 24


def default_n_angles(size: int) -> int:
    """Angular Nyquist for parallel beam: ceil(pi/2 * size) views over 180 degrees."""
    return int(math.ceil(math.pi / 2 * size))


def angles_deg(n_angles: int) -> np.ndarray:
    """Equally spaced projection angles in [0, 180) degrees (scikit-image convention)."""
    return np.arange(n_angles, dtype=np.float64) * (180.0 / n_angles)


def _padding(size: int) -> tuple[int, int]:
    """Padded (diagonal) size and the padding before the image, as in skimage ``radon(circle=False)``."""
    pad = int(np.ceil(np.sqrt(2) * size - size))
    padded = size + pad
    pad_before = (padded // 2) - (size // 2)
    return padded, pad_before


def detector_size(size: int) -> int:
    """Number of detector bins for an image of edge ``size``."""
    return _padding(size)[0]


@functools.lru_cache(maxsize=8)
def _forward_grid(size: int, n_angles: int, device: str) -> torch.Tensor:
    """Sampling grid (1, A*D, D, 2): for angle a, ray step i, detector bin j, the image point sampled."""
    padded, pad_before = _padding(size)
    c = padded // 2
    theta = torch.as_tensor(np.deg2rad(angles_deg(n_angles)), dtype=torch.float64)
    cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    steps = torch.arange(padded, dtype=torch.float64) - c
    ys = steps[None, :, None]  # along the ray
    xs = steps[None, None, :]  # detector position
    col = c + cos * xs + sin * ys - pad_before
    row = c - sin * xs + cos * ys - pad_before
    scale = 2.0 / (size - 1)
    grid = torch.stack((col * scale - 1.0, row * scale - 1.0), dim=-1)  # (A, D, D, 2)
    return grid.reshape(1, n_angles * padded, padded, 2).to(device=device, dtype=torch.float32)


@functools.lru_cache(maxsize=8)
def _back_grid(size: int, n_angles: int, device: str) -> torch.Tensor:
    """Sampling grid (A, 1, N*N, 2): for angle a and pixel, the detector position it projects to."""
    padded = detector_size(size)
    radius = size // 2
    theta = torch.as_tensor(np.deg2rad(angles_deg(n_angles)), dtype=torch.float64)
    rows, cols = torch.meshgrid(
        torch.arange(size, dtype=torch.float64) - radius,
        torch.arange(size, dtype=torch.float64) - radius,
        indexing="ij",
    )
    t = cols.reshape(1, -1) * torch.cos(theta)[:, None] - rows.reshape(1, -1) * torch.sin(theta)[:, None]
    idx = t + padded // 2
    gx = idx * (2.0 / (padded - 1)) - 1.0
    grid = torch.stack((gx, torch.zeros_like(gx)), dim=-1)  # (A, N*N, 2)
    return grid.reshape(n_angles, 1, size * size, 2).to(device=device, dtype=torch.float32)


def ramp_filter(n: int) -> np.ndarray:
    """Ramp filter of length ``n`` built in the spatial domain (no DC offset), as scikit-image does."""
    k = np.concatenate(
        (np.arange(1, n / 2 + 1, 2, dtype=int), np.arange(n / 2 - 1, 0, -2, dtype=int))
    )
    f = np.zeros(n)
    f[0] = 0.25
    f[1::2] = -1 / (np.pi * k) ** 2
    return 2 * np.real(np.fft.fft(f))


def radon_torch(images: torch.Tensor, n_angles: int) -> torch.Tensor:
    """Parallel-beam line integrals (unit = pixel edge) of ``images`` (B, N, N) -> (B, A, D)."""
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"expected square images (B, N, N), got {tuple(images.shape)}")
    b, size, _ = images.shape
    padded = detector_size(size)
    grid = _forward_grid(size, n_angles, str(images.device))
    x = images.to(torch.float32).unsqueeze(0)  # (1, B, N, N): images as channels
    per_angle = padded * padded
    chunk = max(1, _MAX_SAMPLES // max(1, b * per_angle))
    out = []
    for a0 in range(0, n_angles, chunk):
        a1 = min(n_angles, a0 + chunk)
        g = grid[:, a0 * padded : a1 * padded]
        s = F.grid_sample(x, g, mode="bilinear", padding_mode="zeros", align_corners=True)
        out.append(s.view(b, a1 - a0, padded, padded).sum(dim=2))
    return torch.cat(out, dim=1)


def fbp_torch(sinograms: torch.Tensor, size: int) -> torch.Tensor:
    """Filtered back-projection (ramp filter, linear interpolation) of (B, A, D) -> (B, size, size)."""
    b, n_angles, padded = sinograms.shape
    if padded != detector_size(size):
        raise ValueError(f"sinogram has {padded} detector bins, expected {detector_size(size)} for size {size}")
    n_fft = max(64, int(2 ** np.ceil(np.log2(2 * padded))))
    filt = torch.as_tensor(ramp_filter(n_fft), dtype=torch.float32, device=sinograms.device)
    spec = torch.fft.fft(sinograms.to(torch.float32), n=n_fft, dim=-1) * filt
    q = torch.fft.ifft(spec, dim=-1).real[..., :padded]  # (B, A, D)
    q = q.permute(1, 0, 2).unsqueeze(2).contiguous()  # (A, B, 1, D): one "image" per angle
    grid = _back_grid(size, n_angles, str(sinograms.device))
    chunk = max(1, _MAX_SAMPLES // max(1, b * size * size))
    recon = torch.zeros(b, size * size, dtype=torch.float32, device=sinograms.device)
    for a0 in range(0, n_angles, chunk):
        a1 = min(n_angles, a0 + chunk)
        s = F.grid_sample(q[a0:a1], grid[a0:a1], mode="bilinear", padding_mode="zeros", align_corners=True)
        recon += s.sum(dim=0).view(b, -1)
    return (recon * (math.pi / (2 * n_angles))).view(b, size, size)


def radon_skimage(images: np.ndarray, n_angles: int) -> np.ndarray:
    """Reference: scikit-image ``radon(circle=False)`` per image, as (B, A, D)."""
    from skimage.transform import radon

    theta = angles_deg(n_angles)
    return np.stack([radon(im.astype(np.float64), theta=theta, circle=False).T for im in images]).astype(
        np.float32
    )


def fbp_skimage(sinograms: np.ndarray, size: int) -> np.ndarray:
    """Reference: scikit-image ``iradon(filter_name='ramp', circle=False)`` per sinogram (B, A, D)."""
    from skimage.transform import iradon

    theta = angles_deg(sinograms.shape[1])
    return np.stack(
        [
            iradon(s.T.astype(np.float64), theta=theta, output_size=size, filter_name="ramp", circle=False)
            for s in sinograms
        ]
    ).astype(np.float32)
