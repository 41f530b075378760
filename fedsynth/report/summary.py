"""From per-image metrics to the report's ``methods`` and ``comparisons``.

Input everywhere: ``{method: {site: {metric: per-image array}}}``, every
method scored on the same test images of a site in the same order (the
federation and :func:`fedsynth.tasks.evaluate_network` with a shared seed
guarantee that), so differences are paired image by image.

    >>> methods = summarise(per_image)
    >>> comparisons = compare(per_image, reference_method="real", margins={"psnr": 0.5, "ssim": 0.01})
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedsynth.report.stats import DEFAULT_MARGINS, bootstrap_ci, paired_comparison

__all__ = ["PerImage", "compare", "summarise", "summarise_values"]

PerImage = Mapping[str, Mapping[str, Mapping[str, Any]]]
_METRICS = ("psnr", "ssim", "rmse", "rmse_hu")


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def summarise_values(values: Any, seed: int = 0) -> dict[str, float | None] | None:
    """``{mean, ci_low, ci_high, std}`` of per-image values (bootstrap 95% CI); None when empty."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    lo, hi = bootstrap_ci(v, seed=seed, n_resamples=2000) if v.size >= 2 else (float(v[0]), float(v[0]))
    return {"mean": float(v.mean()), "ci_low": _finite(lo), "ci_high": _finite(hi), "std": float(v.std())}


def _site_block(metrics_by_site: Mapping[str, Mapping[str, Any]], seed: int) -> dict[str, Any]:
    per_site: dict[str, Any] = {}
    pooled: dict[str, list[np.ndarray]] = {}
    for site in sorted(metrics_by_site):
        m = metrics_by_site[site]
        row: dict[str, Any] = {}
        for key in _METRICS:
            if key in m:
                arr = np.asarray(m[key], dtype=np.float64).ravel()
                row[key] = summarise_values(arr, seed)
                pooled.setdefault(key, []).append(arr)
        for key in ("psnr", "ssim", "rmse"):
            row.setdefault(key, None)
        row["n"] = int(np.asarray(m.get("psnr", [])).size)
        per_site[site] = row
    pool_row: dict[str, Any] = {k: summarise_values(np.concatenate(v), seed) for k, v in pooled.items()}
    for key in ("psnr", "ssim", "rmse"):
        pool_row.setdefault(key, None)
    pool_row["n"] = int(sum(r["n"] for r in per_site.values()))
    return {"per_site": per_site, "pooled": pool_row}


def summarise(per_image: PerImage, seed: int = 0) -> dict[str, Any]:
    """The report's ``methods``: per method, per-site and pooled mean with bootstrap CI, and ``n``."""
    return {method: _site_block(sites, seed) for method, sites in per_image.items()}


def compare(
    per_image: PerImage,
    reference_method: str,
    margins: Mapping[str, float] | None = None,
    alpha: float = 0.05,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Paired comparisons of every other method (``a``) against ``reference_method`` (``b``).

    One entry per (method, metric in ``margins``, site), plus ``site="pooled"``
    over every image of the sites both methods were scored on. Sites where
    the two methods have different numbers of images are skipped (not paired).
    """
    if reference_method not in per_image:
        raise KeyError(f"reference method {reference_method!r} not among {sorted(per_image)}")
    margins = dict(DEFAULT_MARGINS if margins is None else margins)
    ref = per_image[reference_method]
    out: list[dict[str, Any]] = []
    for method in per_image:
        if method == reference_method:
            continue
        sites = per_image[method]
        for metric, margin in margins.items():
            pooled_a: list[np.ndarray] = []
            pooled_b: list[np.ndarray] = []
            for site in sorted(set(sites) & set(ref)):
                if metric not in sites[site] or metric not in ref[site]:
                    continue
                a = np.asarray(sites[site][metric], dtype=np.float64).ravel()
                b = np.asarray(ref[site][metric], dtype=np.float64).ravel()
                if a.size != b.size:
                    continue
                pooled_a.append(a)
                pooled_b.append(b)
                out.append(_entry(method, reference_method, metric, site, a, b, margin, alpha, seed))
            if len(pooled_a) > 1:
                a, b = np.concatenate(pooled_a), np.concatenate(pooled_b)
                out.append(_entry(method, reference_method, metric, "pooled", a, b, margin, alpha, seed))
            elif len(pooled_a) == 1:
                out.append({**out[-1], "site": "pooled"})
    return out


def _entry(
    a_name: str, b_name: str, metric: str, site: str, a: np.ndarray, b: np.ndarray, margin: float, alpha: float,
    seed: int,
) -> dict[str, Any]:
    base: dict[str, Any] = {"a": a_name, "b": b_name, "metric": metric, "site": site, "n": int(a.size),
                            "margin": float(margin)}
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 2:
        return {**base, "mean_diff": None, "p_ttest": None, "p_tost": None, "p_wilcoxon": None}
    r = paired_comparison(a[ok], b[ok], margin=margin, alpha=alpha, seed=seed).to_dict()
    r.pop("alpha")
    return {**base, **r, "n": int(ok.sum())}
