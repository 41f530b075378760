"""Comparisons with the patient as the statistical unit, Holm's correction and a verdict per comparison.

Why the patient and not the slice: a site's test set is a few patients cut
into many 2-D slices (e.g. 216 slices from 9 patients). Slices of one patient
share anatomy, scanner, protocol and noise, so a network's errors on them are
correlated; a test that counts every slice as an independent observation
(:func:`fedsynth.report.paired_comparison`) pretends to have 216 observations
when the data hold roughly 9, and its p-values are far too small
(pseudo-replication). Here the two methods' per-image scores are paired image
by image within a site, then reduced to one number per patient, the mean
difference ``d_p = mean(a) - mean(b)`` over that patient's images. A patient
is ``(site, patient number)``: numbers are site-local and anonymous. Every
test below counts patients, each patient weighted equally.

What is computed (:func:`compare_by_patient`, differences are ``a - b`` on
the metric as it is, so for RMSE a *negative* difference means ``a`` is better):

* ``mean_diff``: mean of the per-patient differences.
* ``ci90_low`` / ``ci90_high``: the t-interval of that mean at level
  ``1 - 2 alpha`` (90 % at the default alpha 0.05). Why 90 % and not 95 %:
  TOST at level alpha runs two one-sided tests at alpha each, and it rejects
  non-equivalence exactly when this ``1 - 2 alpha`` interval lies inside
  ``[-margin, +margin]`` (Schuirmann 1987). A 95 % interval drawn next to a
  TOST verdict would not match it.
* ``ci95_low`` / ``ci95_high``: a hierarchical percentile bootstrap at level
  ``1 - alpha``: each resample draws the sites with replacement, then, inside
  every drawn site, that site's patients with replacement, and — when the
  per-seed runs are given (``seed_runs``) — the training seeds with
  replacement (once per resample: a seed moves every patient at once), and
  takes the mean of the drawn patients' differences over the drawn seeds. Resampling sites as well as patients
  carries the site-to-site variation into the interval (the study's claim is
  about sites like these, not only about these sites). Seeded, ``n_boot``
  resamples. With a handful of sites or patients a percentile bootstrap is
  coarse (3 patients have 10 distinct resamples, and the interval is then too
  narrow); it is reported as a second view, the verdict uses the t-based tests.
* ``p_ttest``: two-sided one-sample t-test of the patient differences
  against 0 (the paired t-test on per-patient means); ``p_wilcoxon``: the
  signed-rank test on them (None with fewer than 2 nonzero differences).
* ``p_tost``: equivalence within ``±margin`` (the larger of the two
  one-sided t-test p-values); ``p_noninferior``: one-sided, H0 "``a`` is worse
  than ``b`` by at least ``margin``" (``d <= -margin`` when higher is better,
  ``d >= +margin`` when lower is better).
* ``mixed``: a linear mixed model on the per-image differences (``diff ~ 1``,
  random intercepts for the site and for the patient within the site,
  statsmodels ``MixedLM``, REML) with its Wald ``1 - alpha`` CI and p; when
  that cannot be fitted (one site, singular fit, any warning, which is turned
  into an error) a model with a patient random intercept only; else None.
  It is a sensitivity check: its Wald z ignores how few sites and patients
  there are, so its p-value is too small with few groups. Verdicts do not use it.

With fewer than 2 patients every p-value and interval is None.

Multiplicity (:func:`holm`, :func:`add_verdicts`): a study asks many
questions at once (methods x metrics). Holm's step-down correction
(Holm 1979) controls the family-wise error rate; each kind of test (difference,
equivalence, non-inferiority) is its own family over the whole list.

The verdict rule (:func:`add_verdicts`), first match wins, at alpha on
Holm-adjusted p-values:

1. ``equivalent``: ``p_tost_holm < alpha``;
2. ``superior``: ``p_ttest_holm < alpha`` and the difference is in the better direction;
3. ``non-inferior``: ``p_noninferior_holm < alpha``;
4. ``inferior``: ``p_ttest_holm < alpha`` and the difference is in the worse direction;
5. ``inconclusive``: otherwise (absence of evidence, not evidence of no difference).

    >>> row = compare_by_patient(per_image["synthetic-pool"], per_image["fedavg"], test_patients, "psnr", 0.5)
    >>> rows = add_verdicts([{"a": "synthetic-pool", "b": "fedavg", **row}])
    >>> rows[0]["verdict_text"]
    'synthetic-pool vs fedavg, psnr: equivalent within ±0.5 (9 patients; mean difference 0.06; 90 % CI −0.21 to 0.34)'
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["add_verdicts", "compare_by_patient", "holm", "per_patient"]

log = logging.getLogger(__name__)

#: The verdicts :func:`add_verdicts` can give, in the order the rule tries them.
VERDICTS = ("equivalent", "superior", "non-inferior", "inferior", "inconclusive")


def per_patient(values: Any, patients: Any) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique patient keys and the mean of ``values`` over each patient's images.

    ``values[i]`` belongs to patient ``patients[i]``. Non-finite values are
    not dropped here (a patient with one NaN image gets a NaN mean); callers
    that need to drop them do so first.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    p = np.asarray(patients).ravel()
    if v.size != p.size:
        raise ValueError(f"values and patients must have the same length, got {v.size} and {p.size}")
    keys, inverse = np.unique(p, return_inverse=True)
    sums = np.bincount(inverse, weights=v, minlength=keys.size)
    counts = np.bincount(inverse, minlength=keys.size)
    return keys, sums / counts


def _site_differences(
    a: Mapping[str, Mapping[str, Sequence[float]]],
    b: Mapping[str, Mapping[str, Sequence[float]]],
    patients: Mapping[str, Sequence[int]],
    metric: str,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, str]]:
    """Per site: (per-image differences, patient number per image), finite pairs only; and skipped sites."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    skipped: dict[str, str] = {}
    for site in sorted(set(a) | set(b)):
        if site not in a or site not in b:
            continue  # a method not scored on this site (e.g. local-only): nothing to pair, not an error
        if metric not in a[site] or metric not in b[site]:
            continue
        xa = np.asarray(a[site][metric], dtype=np.float64).ravel()
        xb = np.asarray(b[site][metric], dtype=np.float64).ravel()
        if site not in patients:
            skipped[site] = "no patient numbers for this site"
        elif xa.size != xb.size:
            skipped[site] = f"the methods were scored on different numbers of images ({xa.size} and {xb.size})"
        elif np.asarray(patients[site]).size != xa.size:
            skipped[site] = f"{np.asarray(patients[site]).size} patient numbers for {xa.size} images"
        if site in skipped:
            log.warning("patient comparison of %s: site %s skipped: %s", metric, site, skipped[site])
            continue
        pid = np.asarray(patients[site]).ravel()
        ok = np.isfinite(xa) & np.isfinite(xb)  # e.g. PSNR of identical images is inf
        if ok.any():
            out[site] = (xa[ok] - xb[ok], pid[ok])
    return out, skipped


def _hierarchical_bootstrap(
    by_site: list[np.ndarray], confidence: float, n_boot: int, seed: int
) -> tuple[float, float]:
    """Percentile CI of the mean patient difference, resampling sites, patients within sites, and seeds.

    ``by_site[s]`` is ``(patients,)`` (seed-averaged differences) or
    ``(patients, seeds)`` (one column per training seed). With seeds, each
    resample also draws the seeds with replacement — once for all patients,
    because a seed is one training run that moves every patient's score at
    once — and a patient's value is its mean over the drawn seeds.
    Vectorised per (slot, site): for each of the ``S`` site slots of every
    resample, the resamples that drew site ``s`` in that slot redraw its
    patients. The statistic is the mean over every drawn patient.
    """
    rng = np.random.default_rng(seed)
    n_sites = len(by_site)
    mats = [d[:, None] if d.ndim == 1 else d for d in by_site]
    n_seeds = mats[0].shape[1]
    if n_seeds > 1:  # (seeds, n_boot) weights: how often each seed was drawn, over the number of seeds
        draws = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
        weights = np.stack([(draws == k).sum(axis=1) for k in range(n_seeds)]) / n_seeds
        values = [m @ weights for m in mats]  # (patients, n_boot): each patient under each resample's seeds
    else:
        values = [np.repeat(m, n_boot, axis=1) for m in mats]
    site_draw = rng.integers(0, n_sites, size=(n_boot, n_sites))
    total = np.zeros(n_boot)
    count = np.zeros(n_boot)
    for slot in range(n_sites):
        for s, v in enumerate(values):
            hit = np.flatnonzero(site_draw[:, slot] == s)
            if hit.size == 0:
                continue
            n_pat = v.shape[0]
            draw = rng.integers(0, n_pat, size=(hit.size, n_pat))
            total[hit] += v[draw, hit[:, None]].sum(axis=1)
            count[hit] += n_pat
    means = total / count
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return float(lo), float(hi)


def _seed_matrices(
    seed_runs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]], patients: Mapping[str, Sequence[int]],
    metric: str, sites: Sequence[str],
) -> list[np.ndarray] | None:
    """Per site ``(patients, seeds)`` patient-mean differences of each seed's pair of runs; None if they do not line up."""
    cols: dict[str, list[np.ndarray]] = {s: [] for s in sites}
    keys: dict[str, np.ndarray] = {}
    for a_k, b_k in seed_runs:
        per, _ = _site_differences(a_k, b_k, patients, metric)
        for s in sites:
            if s not in per:
                return None
            k, m = per_patient(*per[s])
            if s in keys and not np.array_equal(keys[s], k):
                return None
            keys[s] = k
            cols[s].append(m)
    return [np.stack(cols[s], axis=1) for s in sites]


def _one_sided(d: np.ndarray, value: float, alternative: str) -> float:
    """One-sample t-test p-value of ``mean(d)`` against ``value``; exact answer when ``d`` is constant."""
    from scipy.stats import ttest_1samp

    if np.ptp(d) == 0:  # zero variance: scipy would warn and return NaN; the answer is certain
        m = float(d[0])
        if alternative == "greater":
            return 0.0 if m > value else 1.0
        if alternative == "less":
            return 0.0 if m < value else 1.0
        return 1.0 if m == value else 0.0
    return float(ttest_1samp(d, value, alternative=alternative).pvalue)


def _wilcoxon(d: np.ndarray) -> float | None:
    from scipy.stats import wilcoxon

    nz = d[d != 0]
    if nz.size < 2:
        return None
    with warnings.catch_warnings():  # "exact p-value unavailable with ties": scipy falls back, we accept it
        warnings.simplefilter("ignore")
        p = float(wilcoxon(nz).pvalue)
    return p if math.isfinite(p) else None


def _fit_mixed(frame: Any, formula_groups: str, vc: dict[str, str] | None, alpha: float) -> dict[str, Any]:
    import statsmodels.formula.api as smf

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # boundary / convergence / singular Hessian: not a fit we report
        model = smf.mixedlm("diff ~ 1", frame, groups=formula_groups, re_formula="1", vc_formula=vc)
        fit = model.fit(reml=True)
    if not fit.converged:
        raise RuntimeError("MixedLM did not converge")
    est = float(fit.fe_params.iloc[0])
    lo, hi = (float(x) for x in fit.conf_int(alpha=alpha).iloc[0])
    p = float(fit.pvalues.iloc[0])
    if not all(math.isfinite(x) for x in (est, lo, hi, p)):
        raise RuntimeError("MixedLM gave non-finite estimates")
    return {"estimate": est, "ci_low": lo, "ci_high": hi, "p": p}


def _mixed(sites: dict[str, tuple[np.ndarray, np.ndarray]], alpha: float) -> dict[str, Any] | None:
    """Random intercepts for site and patient-in-site; else patient only; else None (never raises)."""
    try:
        import pandas as pd

        frame = pd.DataFrame({
            "diff": np.concatenate([d for d, _ in sites.values()]),
            "site": np.concatenate([[s] * d.size for s, (d, _) in sites.items()]),
            "patient": np.concatenate([[f"{s}/{p}" for p in pid] for s, (_, pid) in sites.items()]),
        })
    except Exception as err:  # the mixed model is optional; verdicts do not use it
        log.debug("mixed model: no data frame: %s", err)
        return None
    if len(sites) >= 2:
        try:
            return {**_fit_mixed(frame, "site", {"patient": "0 + C(patient)"}, alpha), "model": "site + patient"}
        except Exception as err:
            log.debug("mixed model with site and patient intercepts not fitted: %s", err)
    try:
        return {**_fit_mixed(frame, "patient", None, alpha), "model": "patient"}
    except Exception as err:
        log.debug("mixed model with a patient intercept not fitted: %s", err)
    return None


def compare_by_patient(
    a: Mapping[str, Mapping[str, Sequence[float]]],
    b: Mapping[str, Mapping[str, Sequence[float]]],
    patients: Mapping[str, Sequence[int]],
    metric: str,
    margin: float,
    higher_is_better: bool = True,
    alpha: float = 0.05,
    seed: int = 0,
    n_boot: int = 2000,
    seed_runs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Compare two methods on ``metric`` with the patient as the unit (see the module docstring).

    ``seed_runs``: the per-seed pairs ``(a_k, b_k)`` that ``a`` and ``b``
    average (same layout); with two or more, the bootstrap CI also resamples
    the seeds (``bootstrap_levels`` says what was resampled).

    ``a[site][metric]`` and ``b[site][metric]`` are per-image scores on the
    same test images of each site in the same order; ``patients[site][i]`` is
    the patient number of image ``i``. Sites only one method was scored on, or
    without ``metric``, are left out silently; sites whose lengths do not match
    are left out with a warning and listed in ``skipped_sites``. Image pairs
    with a non-finite score are dropped. Differences are ``a - b`` as the
    metric is (``higher_is_better=False`` for RMSE only changes which
    direction the one-sided test and the verdict call better).
    """
    if margin <= 0:
        raise ValueError(f"equivalence margin must be > 0, got {margin}")
    sites, skipped = _site_differences(a, b, patients, metric)
    by_site: list[np.ndarray] = []
    for d, pid in sites.values():
        by_site.append(per_patient(d, pid)[1])
    dp = np.concatenate(by_site) if by_site else np.zeros(0)
    n = int(dp.size)
    row: dict[str, Any] = {
        "metric": metric,
        "unit": "patient",
        "n_patients": n,
        "n_sites": len(sites),
        "n_images": int(sum(d.size for d, _ in sites.values())),
        "mean_diff": float(dp.mean()) if n else None,
        "ci90_low": None,
        "ci90_high": None,
        "ci95_low": None,
        "ci95_high": None,
        "p_ttest": None,
        "p_wilcoxon": None,
        "p_tost": None,
        "p_noninferior": None,
        "margin": float(margin),
        "higher_is_better": bool(higher_is_better),
        "alpha": float(alpha),
        "mixed": None,
        "bootstrap_levels": None,
        "skipped_sites": skipped,
    }
    if n < 2:
        return row
    from scipy.stats import t as t_dist

    mean = float(dp.mean())
    se = float(dp.std(ddof=1)) / math.sqrt(n)
    half = float(t_dist.ppf(1.0 - alpha, n - 1)) * se
    levels = "sites, patients"
    boot_input: list[np.ndarray] = by_site
    if seed_runs is not None and len(seed_runs) > 1:
        mats = _seed_matrices(seed_runs, patients, metric, list(sites))
        if mats is None:
            log.warning("patient comparison of %s: the seeds' runs do not line up; the bootstrap keeps the "
                        "seed average", metric)
        else:
            boot_input, levels = mats, f"sites, patients, seeds ({len(seed_runs)})"
    lo95, hi95 = _hierarchical_bootstrap(boot_input, 1.0 - alpha, n_boot, seed)
    p_lower = _one_sided(dp, -margin, "greater")
    p_upper = _one_sided(dp, margin, "less")
    row.update(
        ci90_low=mean - half,
        ci90_high=mean + half,
        ci95_low=lo95,
        ci95_high=hi95,
        bootstrap_levels=levels,
        p_ttest=_one_sided(dp, 0.0, "two-sided"),
        p_wilcoxon=_wilcoxon(dp),
        p_tost=max(p_lower, p_upper),
        p_noninferior=p_lower if higher_is_better else p_upper,
        mixed=_mixed(sites, alpha),
    )
    return row


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni step-down adjusted p-values, in the input order.

    The k-th smallest of ``m`` p-values is multiplied by ``m - k + 1``; the
    adjusted values are made monotone (running maximum) and capped at 1.
    None (and NaN) is passed through as None and not counted in ``m``.
    """
    out: list[float | None] = [None] * len(pvalues)
    present = sorted((float(p), i) for i, p in enumerate(pvalues) if p is not None and not math.isnan(p))
    m = len(present)
    running = 0.0
    for k, (p, i) in enumerate(present):
        running = max(running, min(1.0, (m - k) * p))
        out[i] = running
    return out


def _num(x: float) -> str:
    return f"{x:.3g}".replace("-", "\u2212")


def _better(c: Mapping[str, Any]) -> bool | None:
    """True if ``a`` did better than ``b`` (direction-aware), False if worse, None if no difference."""
    d = c.get("mean_diff")
    if d is None or d == 0:
        return None
    return (d > 0) == bool(c.get("higher_is_better", True))


def _verdict(c: Mapping[str, Any], alpha: float) -> str:
    def sig(key: str) -> bool:
        p = c.get(key)
        return p is not None and p < alpha

    if sig("p_tost_holm"):
        return "equivalent"
    if sig("p_ttest_holm") and _better(c) is True:
        return "superior"
    if sig("p_noninferior_holm"):
        return "non-inferior"
    if sig("p_ttest_holm") and _better(c) is False:
        return "inferior"
    return "inconclusive"


def _verdict_text(c: Mapping[str, Any]) -> str:
    pair = f"{c['a']} vs {c['b']}, " if "a" in c and "b" in c else ""
    site = f" ({c['site']})" if c.get("site") not in (None, "pooled") else ""
    margin = _num(float(c["margin"])) if c.get("margin") is not None else "?"
    verdict = c["verdict"]
    phrase = {"equivalent": f"equivalent within ±{margin}", "non-inferior": f"non-inferior at margin {margin}"}
    n = c.get("n_patients")
    parts = [f"{n} patient{'s' if n != 1 else ''}" if n is not None else "patients unknown"]
    if c.get("mean_diff") is not None:
        parts.append(f"mean difference {_num(c['mean_diff'])}")
    if c.get("ci90_low") is not None and c.get("ci90_high") is not None:
        level = round(100 * (1 - 2 * float(c.get("alpha", 0.05))))
        parts.append(f"{level} % CI {_num(c['ci90_low'])} to {_num(c['ci90_high'])}")
    else:
        parts.append("no CI")
    return f"{pair}{c.get('metric', '?')}{site}: {phrase.get(verdict, verdict)} ({'; '.join(parts)})"


def add_verdicts(comparisons: list[dict[str, Any]], alpha: float = 0.05) -> list[dict[str, Any]]:
    """New dicts with Holm-adjusted p-values, a ``verdict`` and a one-line ``verdict_text`` each.

    Families: all ``p_ttest`` of the list, all ``p_tost``, all
    ``p_noninferior`` (each corrected on its own). The rule is in the module
    docstring; a missing p-value never counts as significant. The inputs are
    not modified.
    """
    adjusted = {
        key: holm([c.get(key) for c in comparisons]) for key in ("p_ttest", "p_tost", "p_noninferior")
    }
    out = []
    for i, c in enumerate(comparisons):
        row = {**c, **{f"{key}_holm": adj[i] for key, adj in adjusted.items()}}
        row["verdict"] = _verdict(row, alpha)
        row["verdict_text"] = _verdict_text(row)
        out.append(row)
    return out
