"""Matplotlib figures for the report, returned as PNG bytes (embedded in the HTML as base64).

The Agg backend is forced so rendering works headless; figures are closed
after saving so a long study does not leak memory.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["crops_figure", "learning_curves", "metric_bars", "patient_plot", "sample_grid"]


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def metric_bars(
    rows: Mapping[str, Mapping[str, tuple[float | None, float | None, float | None]]], metric: str
) -> bytes:
    """Grouped bars: x = site (and "pooled"), one bar per method, error bars = CI.

    ``rows[method][site] = (mean, ci_low, ci_high)``; missing CI draws no error bar.
    """
    plt = _pyplot()
    methods = list(rows)
    sites = sorted({s for m in rows.values() for s in m}, key=lambda s: (s == "pooled", s))
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(sites) * max(1, len(methods)) * 0.5 + 2), 3.2))
    x = np.arange(len(sites))
    for i, method in enumerate(methods):
        means, lo_err, hi_err = [], [], []
        for s in sites:
            mean, lo, hi = rows[method].get(s, (None, None, None))
            means.append(np.nan if mean is None else mean)
            lo_err.append(0.0 if mean is None or lo is None else max(0.0, mean - lo))
            hi_err.append(0.0 if mean is None or hi is None else max(0.0, hi - mean))
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, means, width, yerr=[lo_err, hi_err], capsize=3,
               label=method)
    ax.set_xticks(x, sites)
    ax.set_ylabel(metric.upper())
    finite = [v for m in rows.values() for (v, _, _) in m.values() if v is not None and np.isfinite(v)]
    if finite and metric != "rmse":
        lo, hi = min(finite), max(finite)
        pad = max(0.05 * abs(hi), (hi - lo) * 0.6, 1e-3)
        ax.set_ylim(lo - pad, hi + pad)
    ax.legend(fontsize=7, loc="best")
    ax.set_title(f"{metric.upper()} per site (95% CI)")
    return _png(fig)


def learning_curves(curves: Mapping[str, Sequence[Mapping[str, Any]]]) -> bytes:
    """Validation PSNR against optimiser steps and against bytes communicated, one line per model.

    ``curves[name]`` is a list of validation points (``steps``, ``val_psnr``,
    optionally ``bytes``); the kept (best) point is ringed. Models without
    bytes (a site training alone sends nothing) appear on the left panel only.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for name, curve in curves.items():
        steps = [p["steps"] for p in curve]
        psnr = [p["val_psnr"] for p in curve]
        (line,) = axes[0].plot(steps, psnr, marker=".", label=name)
        best = [p for p in curve if p.get("best")]
        if best:
            axes[0].plot([best[0]["steps"]], [best[0]["val_psnr"]], "o", mfc="none", ms=9, color=line.get_color())
        if all(p.get("bytes") is not None for p in curve):
            axes[1].plot([p["bytes"] / 2**20 for p in curve], psnr, marker=".", color=line.get_color(), label=name)
    axes[0].set_xlabel("optimiser steps (FedAvg-family: per client)")
    axes[1].set_xlabel("MiB communicated by the method so far")
    for ax in axes:
        ax.set_ylabel("validation PSNR (dB)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    axes[0].set_title("learning curves on validation patients (ring: kept weights)")
    return _png(fig)


def patient_plot(per_patient: Mapping[str, Mapping[str, Sequence[Any]]]) -> bytes:
    """Methods side by side per test patient: one column per method, one line per patient (mean PSNR)."""
    plt = _pyplot()
    methods = [m for m, v in per_patient.items() if v.get("patients")]
    patients = sorted({p for m in methods for p in per_patient[m]["patients"]})
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(methods) + 1), 3.6))
    for p in patients:
        xs, ys = [], []
        for i, m in enumerate(methods):
            names = list(per_patient[m]["patients"])
            if p in names:
                xs.append(i)
                ys.append(per_patient[m]["psnr"][names.index(p)])
        ax.plot(xs, ys, marker="o", ms=3, lw=0.8, alpha=0.7, label=p)
    ax.set_xticks(range(len(methods)), methods, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("test PSNR (dB), patient mean")
    ax.set_title("every test patient, methods side by side")
    ax.grid(alpha=0.3)
    if len(patients) <= 12:
        ax.legend(fontsize=6, ncol=2, loc="best")
    return _png(fig)


def crops_figure(columns: Mapping[str, np.ndarray], n: int = 3, crop: int | None = None) -> bytes:
    """Rows of example images, columns e.g. input / output / target, optionally centre-cropped."""
    plt = _pyplot()
    names = list(columns)
    k = min(n, *(len(v) for v in columns.values()))
    fig, axes = plt.subplots(k, len(names), figsize=(2.2 * len(names), 2.2 * k), squeeze=False)
    for r in range(k):
        for c, name in enumerate(names):
            img = np.asarray(columns[name][r], dtype=np.float32)
            if crop is not None and crop < min(img.shape):
                y0, x0 = (img.shape[0] - crop) // 2, (img.shape[1] - crop) // 2
                img = img[y0 : y0 + crop, x0 : x0 + crop]
            ax = axes[r][c]
            ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=9)
    return _png(fig)


def sample_grid(groups: Mapping[str, np.ndarray] | Sequence[np.ndarray], n: int = 8) -> bytes:
    """One row of up to ``n`` images per group (e.g. real vs synthetic of a site)."""
    plt = _pyplot()
    items = dict(groups) if isinstance(groups, Mapping) else {f"set {i}": g for i, g in enumerate(groups)}
    cols = max(1, min(n, max(len(v) for v in items.values())))
    fig, axes = plt.subplots(len(items), cols, figsize=(1.4 * cols, 1.5 * len(items)), squeeze=False)
    for r, (name, imgs) in enumerate(items.items()):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(imgs):
                ax.imshow(np.asarray(imgs[c], np.float32), cmap="gray", vmin=0.0, vmax=1.0)
            else:
                ax.axis("off")
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    return _png(fig)
