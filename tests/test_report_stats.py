"""Paired statistics: known cases and scipy cross-checks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from fedsynth.report.stats import DEFAULT_MARGINS, bootstrap_ci, paired_comparison, tost_paired


def test_default_margins() -> None:
    assert DEFAULT_MARGINS["psnr"] == 0.5 and DEFAULT_MARGINS["ssim"] == 0.01


def test_identical_samples_are_equivalent_not_different() -> None:
    a = np.random.default_rng(0).normal(30, 2, 40)
    r = paired_comparison(a, a.copy(), margin=0.5)
    assert r.mean_diff == 0.0 and r.ci_low == r.ci_high == 0.0
    assert r.p_ttest == 1.0 and r.p_wilcoxon == 1.0
    assert r.p_tost < 1e-6 and r.equivalent and not r.significant


def test_near_identical_noisy_samples_are_equivalent() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(30, 2, 60)
    b = a + rng.normal(0, 0.1, 60)
    r = paired_comparison(a, b, margin=0.5)
    assert r.p_tost < 0.001 and r.equivalent
    assert r.ci_low < 0 < r.ci_high


def test_shifted_samples_are_significant_and_not_equivalent() -> None:
    rng = np.random.default_rng(2)
    b = rng.normal(30, 2, 30)
    a = b + 1.0 + rng.normal(0, 0.2, 30)
    r = paired_comparison(a, b, margin=0.5)
    assert r.p_ttest < 1e-10 and r.p_wilcoxon < 1e-5 and r.significant
    assert r.p_tost > 0.5 and not r.equivalent
    assert r.ci_low < r.mean_diff < r.ci_high and r.ci_low > 0.8 and r.ci_high < 1.2


def test_known_case_numbers() -> None:
    # d = a - b = [1, 2, 3, 4, 5]: mean 3, sd sqrt(2.5), t = 3 / (sqrt(2.5)/sqrt(5)) = 4.2426 with 4 dof
    a = np.array([2.0, 4.0, 6.0, 8.0, 10.0])
    b = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    r = paired_comparison(a, b, margin=4.0)
    assert r.mean_diff == 3.0
    assert r.p_ttest == pytest.approx(2 * stats.t.sf(3 / np.sqrt(0.5), 4), rel=1e-9)
    assert r.p_ttest == pytest.approx(0.013236, abs=1e-5)
    assert r.p_wilcoxon == pytest.approx(0.0625, abs=1e-9)  # exact: all 5 positive -> 2 / 2^5
    # TOST with margin 4: upper test t = (3 - 4) / 0.7071 = -1.414, one-sided p = 0.1151; lower p is tiny
    assert r.p_tost == pytest.approx(stats.t.cdf(-1 / np.sqrt(0.5), 4), rel=1e-9)
    assert r.p_tost == pytest.approx(0.11509, abs=1e-4)
    assert not r.equivalent
    # the bootstrap CI of a mean of 1..5 lies within the sample range, around 3
    lo, hi = bootstrap_ci(a - b, seed=0)
    assert 1.0 <= lo < 3.0 < hi <= 5.0
    assert bootstrap_ci(a - b, seed=0) == (lo, hi)  # seeded


def test_tost_margin_and_validation() -> None:
    d = np.array([0.1, -0.1, 0.05, 0.0, 0.02, -0.03])
    assert tost_paired(d, 0.5) < 0.001
    assert tost_paired(d, 0.01) > 0.05
    with pytest.raises(ValueError, match="margin"):
        tost_paired(d, 0.0)
    with pytest.raises(ValueError, match="same length"):
        paired_comparison(np.ones(3), np.ones(4), margin=1)
    with pytest.raises(ValueError, match="NaN"):
        paired_comparison(np.array([1.0, np.inf]), np.array([1.0, 2.0]), margin=1)
