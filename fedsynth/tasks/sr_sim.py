"""Resolution loss for MRI/PET super-resolution, two ways.

* k-space truncation: MRI acquires the Fourier transform of the image, and a
  low-resolution scan is one that stops acquiring at lower spatial
  frequencies. Keeping the central ``(H/f) x (W/f)`` block of the centred
  spectrum and zero-filling the rest gives the low-resolution image on the
  original grid (the scanner's zero-filled reconstruction), with its Gibbs
  ringing. The kept block is made Hermitian-symmetric (frequencies
  ``|k| < H/(2f)``; the unpaired edge row/column of the even-sized block is
  dropped), so the result is exactly real.
* blur + downsample: Gaussian blur (anti-aliasing, PSF), keep every f-th
  pixel, then bicubic upsampling back to ``H x W``: the classic SRCNN set-up,
  closer to PET's smooth point-spread function.

Both return images on the original ``H x W`` grid, so every network (SRCNN,
which expects an upsampled input, and the EDSR-style network, which
sub-pixel-upsamples internally) sees inputs and targets of the same size.

    >>> lr = kspace_truncate(images, factor=2)          # (N, H, W), unclipped
    >>> lr = blur_downsample(images, factor=4)          # (N, H, W)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["blur_downsample", "kspace_mask", "kspace_truncate"]


def kspace_mask(shape: tuple[int, int], factor: int) -> np.ndarray:
    """Boolean mask over the *unshifted* 2-D spectrum: True where a frequency is kept."""
    h, w = shape
    ky = np.fft.fftfreq(h) * h  # integer frequency indices
    kx = np.fft.fftfreq(w) * w
    keep_y = np.abs(ky) < h / (2.0 * factor)
    keep_x = np.abs(kx) < w / (2.0 * factor)
    return keep_y[:, None] & keep_x[None, :]


def kspace_truncate(images: np.ndarray, factor: int) -> np.ndarray:
    """Zero every spatial frequency outside the central band, (N, H, W) -> float32 (N, H, W), not clipped."""
    images = np.asarray(images, dtype=np.float32)
    mask = kspace_mask(images.shape[-2:], factor)
    spec = np.fft.fft2(images.astype(np.float64), axes=(-2, -1))
    return np.fft.ifft2(spec * mask, axes=(-2, -1)).real.astype(np.float32)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(np.ceil(3.0 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def blur_downsample(images: np.ndarray, factor: int, sigma: float | None = None) -> np.ndarray:
    """Gaussian blur (reflect padding), subsample by ``factor``, bicubic back up: (N, H, W) -> float32 (N, H, W)."""
    images = np.asarray(images, dtype=np.float32)
    n, h, w = images.shape
    if h % factor or w % factor:
        raise ValueError(f"image size {h}x{w} is not a multiple of the SR factor {factor}")
    sigma = sigma if sigma is not None else (factor - 1) / 2.0 + 0.5
    k = _gaussian_kernel(sigma)
    r = len(k) // 2
    x = torch.from_numpy(images).unsqueeze(1)
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = F.conv2d(x, k.view(1, 1, -1, 1))
    low = x[:, :, ::factor, ::factor]
    up = F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)
    return up.squeeze(1).numpy().astype(np.float32)
