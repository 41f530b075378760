"""Paired comparison of two methods scored on the same test images.

Why both a difference test and an equivalence test: a paired t-test with
p > 0.05 only says a difference was not detected (with few test images it
almost never is); it is not evidence that the methods are equivalent. TOST
(two one-sided tests, Schuirmann 1987) tests the hypothesis that the mean
paired difference lies *outside* ``[-margin, +margin]``; a small ``p_tost``
rejects that, i.e. shows equivalence within the margin. Reported together
with the mean difference and a seeded percentile-bootstrap 95% CI.

Differences are ``a - b`` per image. The tests come from :mod:`scipy.stats`.

    >>> r = paired_comparison(psnr_synthetic, psnr_real, margin=0.5)
    >>> r.mean_diff, r.ci_low, r.ci_high, r.p_ttest, r.p_tost, r.equivalent
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["DEFAULT_MARGINS", "PairedComparison", "bootstrap_ci", "paired_comparison", "tost_paired"]

#: Equivalence margins per metric (absolute, in the metric's unit): 0.5 dB PSNR, 0.01 SSIM, 0.005 RMSE.
DEFAULT_MARGINS: dict[str, float] = {"psnr": 0.5, "ssim": 0.01, "rmse": 0.005, "rmse_hu": 10.0}


@dataclass(frozen=True)
class PairedComparison:
    """Result of :func:`paired_comparison` (differences are ``a - b``)."""

    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    p_ttest: float
    p_wilcoxon: float
    p_tost: float
    margin: float
    alpha: float
    equivalent: bool
    significant: bool

    def to_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


def _as_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have the same length, got {a.size} and {b.size}")
    if a.size < 2:
        raise ValueError("a paired comparison needs at least 2 images")
    d = a - b
    if not np.isfinite(d).all():
        raise ValueError("paired samples contain NaN or infinite values (e.g. PSNR of identical images)")
    return d


def bootstrap_ci(
    diff: np.ndarray, confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``diff`` (seeded, so reports are reproducible)."""
    from scipy.stats import bootstrap

    diff = np.asarray(diff, dtype=np.float64)
    if np.ptp(diff) == 0:  # degenerate: every resample has the same mean
        return float(diff[0]), float(diff[0])
    res = bootstrap(
        (diff,),
        np.mean,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def tost_paired(diff: np.ndarray, margin: float) -> float:
    """TOST p-value for ``|mean(diff)| < margin`` (the larger of the two one-sided t-test p-values)."""
    from scipy.stats import ttest_1samp

    if margin <= 0:
        raise ValueError(f"equivalence margin must be > 0, got {margin}")
    diff = np.asarray(diff, dtype=np.float64)
    if np.ptp(diff) == 0:  # zero variance: equivalent iff the constant difference is inside the margin
        return 0.0 if abs(float(diff[0])) < margin else 1.0
    p_lower = ttest_1samp(diff, -margin, alternative="greater").pvalue
    p_upper = ttest_1samp(diff, margin, alternative="less").pvalue
    return float(max(p_lower, p_upper))


def paired_comparison(
    a: np.ndarray,
    b: np.ndarray,
    margin: float,
    alpha: float = 0.05,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> PairedComparison:
    """Compare per-image scores ``a`` and ``b`` of two methods on the same images.

    ``equivalent`` is ``p_tost < alpha``; ``significant`` is ``p_ttest < alpha``.
    Zero-variance differences (e.g. identical methods) give p_ttest = 1 when the
    difference is 0, and p_wilcoxon = 1 when every difference is 0.
    """
    from scipy.stats import ttest_rel, wilcoxon

    d = _as_pairs(a, b)
    mean = float(d.mean())
    lo, hi = bootstrap_ci(d, 1 - alpha, n_resamples, seed)
    if np.ptp(d) == 0:
        p_t = 1.0 if mean == 0 else 0.0
    else:
        p_t = float(ttest_rel(np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()).pvalue)
    if np.all(d == 0):
        p_w = 1.0
    else:
        p_w = float(wilcoxon(d, zero_method="wilcox").pvalue)
    p_tost = tost_paired(d, margin)
    p_t = 1.0 if math.isnan(p_t) else p_t
    return PairedComparison(
        n=int(d.size),
        mean_diff=mean,
        ci_low=lo,
        ci_high=hi,
        p_ttest=p_t,
        p_wilcoxon=p_w,
        p_tost=p_tost,
        margin=float(margin),
        alpha=float(alpha),
        equivalent=bool(p_tost < alpha),
        significant=bool(p_t < alpha),
    )
