"""Per-method summaries and paired comparisons for ``report.json`` (DESIGN.md keys).

Means per site and pooled, a paired t-test and a TOST equivalence test
(:func:`fedsynth.tasks.stats.tost_paired`: two one-sided paired t-tests with a
stated margin) on per-image metrics of the same test images degraded with the
same seed.

    >>> summarise({"site-1": {"psnr": [30.1, 29.8], "ssim": [...], "rmse": [...]}})
    {"per_site": {"site-1": {"psnr": 29.95, ..., "n": 2}}, "pooled": {...}}
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["METRIC_KEYS", "compare_methods", "summarise"]

METRIC_KEYS = ("psnr", "ssim", "rmse")


def _mean(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None


def summarise(per_site: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Mean PSNR/SSIM/RMSE and n per site, and pooled over every test image."""
    out: dict[str, Any] = {"per_site": {}, "pooled": {}}
    pooled: dict[str, list[float]] = {k: [] for k in METRIC_KEYS}
    for site, metrics in sorted(per_site.items()):
        row: dict[str, Any] = {}
        for k in METRIC_KEYS:
            v = np.asarray(metrics.get(k, []), dtype=np.float64)
            row[k] = _mean(v)
            pooled[k].extend(v.tolist())
        row["n"] = int(len(np.asarray(metrics.get("psnr", []))))
        out["per_site"][site] = row
    out["pooled"] = {k: _mean(np.asarray(v)) for k, v in pooled.items()}
    out["pooled"]["n"] = len(pooled["psnr"])
    return out


def _paired(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]], metric: str) -> np.ndarray:
    """Per-image differences a - b over the sites both methods were evaluated on."""
    diffs: list[np.ndarray] = []
    for site in sorted(set(a) & set(b)):
        x = np.asarray(a[site].get(metric, []), dtype=np.float64)
        y = np.asarray(b[site].get(metric, []), dtype=np.float64)
        if len(x) == len(y):
            diffs.append(x - y)
    return np.concatenate(diffs) if diffs else np.zeros(0)


def _nan_to_none(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def compare_methods(
    a_name: str,
    a: dict[str, dict[str, Any]],
    b_name: str,
    b: dict[str, dict[str, Any]],
    margins: dict[str, float],
) -> list[dict[str, Any]]:
    """One entry per metric with a margin: paired t-test p and TOST p (equivalent within +-margin)."""
    from scipy import stats

    from fedsynth.tasks.stats import tost_paired

    out = []
    for metric, margin in margins.items():
        d = _paired(a, b, metric)
        entry: dict[str, Any] = {"a": a_name, "b": b_name, "metric": metric, "margin": float(margin),
                                 "n": int(len(d)), "mean_diff": _mean(d), "p_ttest": None, "p_tost": None}
        if len(d) >= 2 and np.std(d) > 0:
            entry["p_ttest"] = _nan_to_none(stats.ttest_1samp(d, 0.0).pvalue)
            entry["p_tost"] = _nan_to_none(tost_paired(d, margin))
        out.append(entry)
    return out
