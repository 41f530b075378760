"""Distances between a candidate image and a real image, and their embeddings.

Each metric is expressed as an *embedding* plus a faiss flat index, so the
nearest real image can be found by exhaustive (exact) search:

``pixel_rmse``
    sqrt(mean((x - y)^2)) on [0, 1] intensities. Embedding: the flattened
    image; faiss ``IndexFlatL2``; rmse = sqrt(d2 / D).

``ncc_robust``
    1 - max_T ncc(T(x), y), where T runs over the identity, horizontal,
    vertical and both flips, each combined with every integer circular shift
    (dy, dx), |dy|, |dx| <= ``max_shift`` (4·81 = 324 transforms by default),
    and ncc is the Pearson correlation of the two images. Standardising each
    image (zero mean, unit norm) makes ncc an inner product and the distance
    exactly invariant to a*y + b with a > 0. Shifts are *circular* (pixels
    leaving one border re-enter at the other) so each T is a permutation of
    pixels and the set is exactly searchable; slices have background at the
    borders, where circular and zero-padded shifts agree. A constant image has
    no correlation with anything (distance 1); ``pixel_rmse`` still covers it.
    Embedding: standardised references in an ``IndexFlatIP``; the transforms
    are applied to the *candidate* side, so the reference index stays one
    flat index.

``learned_copy``
    1 - cosine similarity of the embeddings of the site's copy detector
    (:mod:`fedsynth.privacy.copy_detector`: an encoder trained self-supervised
    on the site's own slices to embed edited copies close). Exact nearest
    neighbour in the embedding (``IndexFlatIP``); the distance is exact *in
    that embedding*, what the embedding catches is measured, not proven.

``random_vgg_rmse`` (paper parity, weak)
    RMSE between 1000 outputs of a randomly initialised VGG-style network
    (fixed seed), as in the paper this project builds on. Documented as weak:
    random features are not trained to notice near-copies; never use it alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fedsynth.errors import GateError
from fedsynth.privacy.config import GateConfig

__all__ = ["MetricSpec", "metric_spec", "ncc_robust", "pixel_rmse", "standardise", "transformed"]


def standardise(images: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """(N, H, W) → (N, H*W) rows with zero mean and unit norm (zero rows for constant images)."""
    flat = images.reshape(len(images), -1).astype(np.float64)
    flat = flat - flat.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(flat, axis=1, keepdims=True)
    out = np.divide(flat, norm, out=np.zeros_like(flat), where=norm > 1e-8 * np.sqrt(flat.shape[1]))
    return out.astype(dtype)


def transformed(images: np.ndarray, max_shift: int, flips: bool) -> np.ndarray:
    """(N, H, W) → (N, T, H, W): every flip × circular shift of each image."""
    from numpy.lib.stride_tricks import sliding_window_view

    n, h, w = images.shape
    s = max_shift
    variants = [images]
    if flips:
        variants += [images[:, :, ::-1], images[:, ::-1, :], images[:, ::-1, ::-1]]
    out = []
    for v in variants:
        padded = np.pad(v, ((0, 0), (s, s), (s, s)), mode="wrap")
        win = sliding_window_view(padded, (h, w), axis=(1, 2))  # (n, 2s+1, 2s+1, h, w)
        out.append(win.reshape(n, (2 * s + 1) ** 2, h, w))
    return np.ascontiguousarray(np.concatenate(out, axis=1))


def pixel_rmse(x: np.ndarray, y: np.ndarray) -> float:
    """Reference definition for one pair (float64)."""
    return float(np.sqrt(np.mean((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2)))


def ncc_robust(x: np.ndarray, y: np.ndarray, max_shift: int = 4, flips: bool = True) -> float:
    """Reference definition for one pair (float64), independent of the search path.

    Circular cross-correlation of the standardised images by FFT gives the
    inner product for every shift at once; the |dy|, |dx| <= ``max_shift``
    window of it is maximised over the flips.
    """
    x64 = np.asarray(x, np.float64)
    zx = standardise(x64[None], np.float64).reshape(x64.shape)
    zy = standardise(np.asarray(y, np.float64)[None], np.float64).reshape(x64.shape)
    fy = np.conj(np.fft.rfft2(zy))
    variants = [zx, zx[:, ::-1], zx[::-1, :], zx[::-1, ::-1]] if flips else [zx]
    idx = np.arange(-max_shift, max_shift + 1)
    best = -np.inf
    for v in variants:
        corr = np.fft.irfft2(np.fft.rfft2(v) * fy, s=v.shape)
        best = max(best, float(corr[np.ix_(idx % v.shape[0], idx % v.shape[1])].max()))
    return float(1.0 - best)


@dataclass(frozen=True)
class MetricSpec:
    """How one metric maps onto a faiss flat index."""

    name: str
    inner_product: bool  # IndexFlatIP (larger is nearer) or IndexFlatL2
    n_transforms: int
    cfg: GateConfig
    detector: Any = None  # learned_copy: the site's CopyDetector

    def embed_references(self, images: np.ndarray) -> np.ndarray:
        if self.name == "pixel_rmse":
            return np.ascontiguousarray(images.reshape(len(images), -1), dtype=np.float32)
        if self.name == "ncc_robust":
            return standardise(images)
        if self.name == "learned_copy":
            return self.detector.embed(images)
        return _random_vgg_features(images)

    def embed_queries(self, images: np.ndarray) -> np.ndarray:
        """(B, H, W) → (B * n_transforms, D') query rows, transforms of one image adjacent."""
        if self.name == "ncc_robust":
            # Flips and circular shifts permute pixels, so they commute with standardisation:
            # standardise once, then transform (no float64 copy of the T-fold expansion).
            z = standardise(images).reshape(images.shape)
            t = transformed(z, self.cfg.max_shift, self.cfg.flips)
            return t.reshape(len(images) * self.n_transforms, -1)
        return self.embed_references(images)

    def to_distance(self, raw: np.ndarray, dim: int) -> np.ndarray:
        """faiss scores (best per query) → distances of this metric."""
        raw = np.asarray(raw, np.float64)
        if self.inner_product:
            return np.clip(1.0 - raw, 0.0, 2.0)
        return np.sqrt(np.maximum(raw, 0.0) / dim)

    def exact_pair(self, x: np.ndarray, y: np.ndarray) -> float:
        """Float64 re-check of one pair (the value written into the certificate)."""
        if self.name == "pixel_rmse":
            return pixel_rmse(x, y)
        if self.name == "ncc_robust":
            return ncc_robust(x, y, self.cfg.max_shift, self.cfg.flips)
        if self.name == "learned_copy":
            ex, ey = self.detector.embed(np.stack([x, y]).astype(np.float32)).astype(np.float64)
            return float(np.clip(1.0 - ex @ ey, 0.0, 2.0))
        fx, fy = _random_vgg_features(np.stack([x, y]).astype(np.float32))
        return float(np.sqrt(np.mean((fx.astype(np.float64) - fy) ** 2)))


def metric_spec(name: str, cfg: GateConfig, detector: Any = None) -> MetricSpec:
    """The spec of metric ``name``; ``learned_copy`` needs the site's copy detector (GateError without)."""
    if name == "ncc_robust":
        n_t = (4 if cfg.flips else 1) * (2 * cfg.max_shift + 1) ** 2
        return MetricSpec(name, True, n_t, cfg)
    if name == "learned_copy":
        if detector is None:
            raise GateError("metric learned_copy needs the site's trained copy detector")
        return MetricSpec(name, True, 1, cfg, detector)
    return MetricSpec(name, False, 1, cfg)


_VGG: dict[str, object] = {}


def _random_vgg_features(images: np.ndarray) -> np.ndarray:
    """1000 outputs of a randomly initialised (seed 0) VGG-style network, as in the paper."""
    import torch
    from torch import nn

    if "net" not in _VGG:
        g = torch.Generator().manual_seed(0)
        layers: list[nn.Module] = []
        c_in = 1
        for c_out in (16, 32, 64, 128, 128):
            conv = nn.Conv2d(c_in, c_out, 3, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2.0 / (9 * c_in)) ** 0.5)
                conv.bias.zero_()
            layers += [conv, nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
            c_in = c_out
        head = nn.Linear(128 * 4, 1000)
        with torch.no_grad():
            head.weight.copy_(torch.randn(head.weight.shape, generator=g) * (1.0 / 512) ** 0.5)
            head.bias.zero_()
        _VGG["net"] = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(2), nn.Flatten(), head).eval()
    net = _VGG["net"]
    out = []
    with torch.no_grad():
        for i in range(0, len(images), 64):
            x = torch.from_numpy(np.ascontiguousarray(images[i : i + 64], np.float32))[:, None]
            out.append(net(x).numpy())  # type: ignore[operator]
    return np.concatenate(out).astype(np.float32)
