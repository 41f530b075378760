"""Control images for the study's texture question: what is a pool worth without its anatomy?

A phase-scrambled image keeps the Fourier amplitude of the original (its
power spectrum: noise texture, sharpness, overall contrast) and replaces the
phase with that of white noise, which destroys every structure — organs,
edges, the body outline — while keeping the spectrum. A denoiser trained on
such images learns the noise prior alone; comparing it with one trained on
the pool itself separates what the pool's anatomy contributes from what its
texture contributes (issue 11; cf. Oppenheim & Lim 1981 on phase carrying
structure).

    >>> controls = phase_scramble(pool_images, seed=0)
"""

from __future__ import annotations

import numpy as np

__all__ = ["phase_scramble"]


def phase_scramble(images: np.ndarray, seed: int) -> np.ndarray:
    """Each image (N, H, W) in [0, 1] with its Fourier phase randomised; amplitude and mean kept, clipped to [0, 1].

    The random phase is the phase of a real white-noise image's FFT, so the
    result is real (Hermitian symmetry) without post-hoc projection; the DC
    term keeps its phase, so each image keeps its mean. Clipping to the
    valid range changes the spectrum slightly where the scrambled image
    overshoots; the share of clipped pixels is small for body-like images.
    """
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"expected (N, H, W) images, got shape {x.shape}")
    rng = np.random.default_rng([seed, 0x5C4A])
    amplitude = np.abs(np.fft.fft2(x))
    phase = np.angle(np.fft.fft2(rng.standard_normal(x.shape)))
    phase[:, 0, 0] = 0.0  # the mean stays where it was
    out = np.real(np.fft.ifft2(amplitude * np.exp(1j * phase)))
    return np.clip(out, 0.0, 1.0).astype(np.float32)
