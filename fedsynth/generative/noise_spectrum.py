"""The noise power spectrum of a slice stack, measured in its flat regions; synthetic against real.

Why: a denoiser learns from its training targets what noise looks like and
what it must keep. Synthetic targets whose fine-scale content has the wrong
power spectrum — too smooth, or grainy with an autoencoder's structure
error, as the latent generator's fitted texture was (6-470x the real power) —
teach it the wrong noise. This measures the spectrum the same way on both
sides, so a ratio per radial frequency band says whether the samples carry
the site's noise.

How (no repeated scans and no test patients needed): each image is cut into
``roi x roi`` regions on a half-overlapping grid; a region counts when its
Gaussian-smoothed version (``smooth`` px, which removes most of the noise)
lies inside the body and is the flattest ``keep`` share of such regions
(least squared residual of a plane fitted to the smoothed region: the
selection looks at structure, not at the noise it then measures). The raw
region minus its fitted plane is the noise sample; its periodogram
``|DFT|^2 / roi^2`` is averaged over regions and over the radial frequency
bands (cycles per pixel) ``(0, 1/8], (1/8, 1/4], (1/4, 3/8], (3/8, max]``,
so white noise of variance ``s^2`` reads ``s^2`` in every band.

What it cannot do: one slice cannot tell scanner noise from fine tissue
texture of the same scale (the bundled CT phantoms have a 1.2 px tissue
texture beside the scanner's 0.7 px correlated noise), so the spectrum is of
both; that is also what a denoiser sees. Detrending removes some of the
lowest band's power on both sides alike. Ratios carry a bootstrap CI over
images.

>>> cmp = compare_noise_spectra(samples, real_train)   # {"ratio": [...], "ci95": [...], "within": ...}
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter

from fedsynth.errors import DataError

__all__ = ["BAND_EDGES", "compare_noise_spectra", "flat_regions", "noise_power_spectrum"]

#: Radial band edges in cycles per pixel; the last band also holds the corners (up to 0.5 * sqrt(2)).
BAND_EDGES = (0.0, 0.125, 0.25, 0.375, 0.5 * 2 ** 0.5)


def _plane_projector(roi: int) -> np.ndarray:
    """(roi^2, roi^2) matrix removing the least-squares plane a + b x + c y from a flattened region."""
    yy, xx = np.mgrid[0:roi, 0:roi].astype(np.float64)
    a = np.stack([np.ones(roi * roi), xx.ravel() - xx.mean(), yy.ravel() - yy.mean()], axis=1)
    return np.eye(roi * roi) - a @ np.linalg.pinv(a)


def flat_regions(images: np.ndarray, roi: int = 8, body: float = 0.15, smooth: float = 1.5,
                 keep: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Detrended flat in-body regions: ``(regions (M, roi, roi), image index of each (M,))``."""
    x = np.asarray(images, np.float64)
    if x.ndim != 3 or min(x.shape[1:]) < roi:
        raise DataError(f"noise spectrum: need an (N, H, W) stack of at least {roi} px, got shape {x.shape}")
    n, h, w = x.shape
    resid = _plane_projector(roi)
    sm = gaussian_filter(x, (0, smooth, smooth))
    stride = max(1, roi // 2)
    rows = np.arange(0, h - roi + 1, stride)
    cols = np.arange(0, w - roi + 1, stride)
    # every candidate region of every image as a (N, R, C, roi*roi) block (views, then one copy)
    win_s = np.lib.stride_tricks.sliding_window_view(sm, (roi, roi), axis=(1, 2))[:, rows][:, :, cols]
    win_x = np.lib.stride_tricks.sliding_window_view(x, (roi, roi), axis=(1, 2))[:, rows][:, :, cols]
    flat_s = win_s.reshape(n, len(rows), len(cols), roi * roi)
    inside = flat_s.min(axis=-1) >= body
    if not inside.any():
        return np.zeros((0, roi, roi)), np.zeros(0, dtype=np.int64)
    cand = flat_s[inside]  # (K, roi*roi)
    structure = ((cand @ resid.T) ** 2).mean(axis=1)
    order = np.argsort(structure, kind="stable")[: max(1, int(round(keep * len(cand))))]
    img_idx = np.nonzero(inside)[0][order]
    raw = win_x.reshape(n, len(rows), len(cols), roi * roi)[inside][order]
    return (raw @ resid.T).reshape(-1, roi, roi), img_idx


def _band_power(regions: np.ndarray) -> np.ndarray:
    roi = regions.shape[-1]
    ps = np.abs(np.fft.fft2(regions)) ** 2 / (roi * roi)  # (M, roi, roi)
    f = np.fft.fftfreq(roi)
    rad = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    out = np.empty((len(regions), len(BAND_EDGES) - 1))
    for b, (lo, hi) in enumerate(zip(BAND_EDGES[:-1], BAND_EDGES[1:], strict=True)):
        m = (rad > lo) & (rad <= hi + 1e-12)
        out[:, b] = ps[:, m].mean(axis=1)
    return out


def noise_power_spectrum(images: np.ndarray, roi: int = 8, **kwargs: Any) -> dict[str, Any]:
    """Mean power per radial band (intensity^2, images in [0, 1]) over the stack's flat regions."""
    regions, _ = flat_regions(images, roi, **kwargs)
    if len(regions) == 0:
        raise DataError("noise spectrum: no flat region inside the body (images empty or too small)")
    power = _band_power(regions).mean(axis=0)
    return {"bands": [list(p) for p in zip(BAND_EDGES[:-1], BAND_EDGES[1:], strict=True)],
            "power": [float(v) for v in power], "sd": float(np.sqrt(power.mean())), "regions": int(len(regions))}


def compare_noise_spectra(synthetic: np.ndarray, real: np.ndarray, roi: int = 8, tolerance: float = 0.2,
                          boots: int = 500, seed: int = 0, **kwargs: Any) -> dict[str, Any]:
    """Per band: synthetic / real power, a 95 % bootstrap CI (images resampled on both sides), and
    whether every band's ratio lies within ``1 +- tolerance``."""
    rs, ri = flat_regions(synthetic, roi, **kwargs)
    qr, qi = flat_regions(real, roi, **kwargs)
    if len(rs) == 0 or len(qr) == 0:
        raise DataError("noise spectrum: no flat region inside the body on one side")
    ps, pr = _band_power(rs), _band_power(qr)

    def per_image(power: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sum of region powers and region count per image (images without regions drop out)."""
        ids, inv = np.unique(idx, return_inverse=True)
        sums = np.zeros((len(ids), power.shape[1]))
        np.add.at(sums, inv, power)
        return sums, np.bincount(inv).astype(np.float64)

    s_sum, s_cnt = per_image(ps, ri)
    r_sum, r_cnt = per_image(pr, qi)
    ratio = (s_sum.sum(0) / s_cnt.sum()) / (r_sum.sum(0) / r_cnt.sum())
    rng = np.random.default_rng(seed)
    draws = np.empty((boots, ratio.size))
    for b in range(boots):
        i = rng.integers(0, len(s_cnt), len(s_cnt))
        j = rng.integers(0, len(r_cnt), len(r_cnt))
        draws[b] = (s_sum[i].sum(0) / s_cnt[i].sum()) / (r_sum[j].sum(0) / r_cnt[j].sum())
    lo, hi = np.percentile(draws, [2.5, 97.5], axis=0)
    return {
        "bands": [list(p) for p in zip(BAND_EDGES[:-1], BAND_EDGES[1:], strict=True)],
        "synthetic_power": [float(v) for v in ps.mean(0)], "real_power": [float(v) for v in pr.mean(0)],
        "ratio": [float(v) for v in ratio], "ci95": [[float(a), float(b)] for a, b in zip(lo, hi, strict=True)],
        "tolerance": tolerance, "within": bool(np.all(np.abs(ratio - 1.0) <= tolerance)),
        "regions": {"synthetic": int(len(rs)), "real": int(len(qr))}, "roi": roi,
    }
