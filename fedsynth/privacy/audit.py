"""Audit of a synthetic set against a site's train and held-out test sets.

Three questions, answered with the gate's own exact search:

- *Holdout comparison*: are synthetic images closer to the training set than
  real held-out images (other patients of the same site) are? Compare the
  distributions of nearest distances synthetic→train and test→train.
- *Copies*: what share of synthetic images would the gate flag (nearest
  distance below the calibrated threshold)?
- *Membership inference*: can an attacker holding the synthetic set tell
  training patients from held-out ones by how close each real image is to
  its nearest synthetic image? Reported as the ROC AUC of that score
  (0.5 = no signal; > 0.5 = training images are closer = leakage).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fedsynth.privacy.config import GateConfig
from fedsynth.privacy.gate import PrivacyGate
from fedsynth.privacy.search import ReferenceIndex

__all__ = ["audit_synthetic", "membership_auc", "memorisation", "plot_audit"]


def membership_auc(train_dist: np.ndarray, test_dist: np.ndarray) -> float:
    """AUC of "closer to the synthetic set ⇒ member": P(d_test > d_train) + ½ P(tie)."""
    from scipy.stats import mannwhitneyu

    u = mannwhitneyu(test_dist, train_dist, alternative="two-sided").statistic
    return float(u / (len(test_dist) * len(train_dist)))


def _summary(d: np.ndarray) -> dict[str, float]:
    return {"min": float(d.min()), "p05": float(np.percentile(d, 5)), "median": float(np.median(d)),
            "mean": float(d.mean())}


def audit_synthetic(
    synthetic: np.ndarray,
    train: np.ndarray,
    train_groups: np.ndarray,
    test: np.ndarray,
    cfg: GateConfig | None = None,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Distances, flagged share and membership-inference AUC per metric (JSON-serialisable)."""
    cfg = cfg or GateConfig()
    gate = PrivacyGate(train, cfg, reference_groups=train_groups, cache_dir=cache_dir)
    syn = gate.check(synthetic)
    held = gate.check(test)
    out: dict[str, Any] = {"n_synthetic": int(len(synthetic)), "n_train": int(len(train)), "n_test": int(len(test)),
                           "metrics": {}}
    syn_index = ReferenceIndex(np.ascontiguousarray(synthetic, np.float32), cfg)
    for m, tau in gate.thresholds.items():
        d_syn, d_test = syn.distances[m], held.distances[m]
        to_syn_train, _ = syn_index.search(m, np.ascontiguousarray(train, np.float32))
        to_syn_test, _ = syn_index.search(m, np.ascontiguousarray(test, np.float32))
        out["metrics"][m] = {
            "threshold": tau,
            "synthetic_to_train": _summary(d_syn),
            "test_to_train": _summary(d_test),
            "flagged_share": float(np.mean(d_syn < tau)),
            "test_flagged_share": float(np.mean(d_test < tau)),
            "membership_auc": membership_auc(to_syn_train, to_syn_test),
            "hist": {"synthetic_to_train": d_syn.tolist(), "test_to_train": d_test.tolist()},
        }
    return out


def _patient_bootstrap(train_d: np.ndarray, train_g: np.ndarray, test_d: np.ndarray, test_g: np.ndarray,
                       seed: int, n_boot: int) -> tuple[float | None, float | None]:
    """95 % CI of the membership AUC, resampling patients (not slices) on both sides."""
    rng = np.random.default_rng(seed)
    tr_ids, te_ids = np.unique(train_g), np.unique(test_g)
    if len(tr_ids) < 2 or len(te_ids) < 2:
        return None, None
    tr_rows = {p: np.flatnonzero(train_g == p) for p in tr_ids}
    te_rows = {p: np.flatnonzero(test_g == p) for p in te_ids}
    aucs = []
    for _ in range(n_boot):
        a = np.concatenate([tr_rows[p] for p in rng.choice(tr_ids, len(tr_ids))])
        b = np.concatenate([te_rows[p] for p in rng.choice(te_ids, len(te_ids))])
        aucs.append(membership_auc(train_d[a], test_d[b]))
    lo, hi = np.percentile(aucs, [2.5, 97.5])
    return float(lo), float(hi)


def memorisation(
    gate: PrivacyGate,
    published: np.ndarray,
    test: np.ndarray,
    test_groups: np.ndarray,
    seed: int = 0,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """How much a site's published set remembers of its training patients, per metric (numbers only).

    Run at the site after the gate, with its held-out patients as the
    non-members (they are only read, never used to choose anything):

    - ``membership_auc``: can an attacker holding the published images tell
      training patients from held-out ones by how close each real slice is to
      its nearest published image? 0.5 = no signal; its ``ci95`` resamples
      patients on both sides (slices of one patient are not independent).
    - ``near_copy_share``: the share of published images nearer to a training
      slice than 95 % of held-out slices are (their 5th percentile of
      held-out→train distances): about 0.05 if the published images sit where
      new patients would, more if they hug the training set. For
      ``learned_copy`` this is the "% copies" of Dar et al. (2025) in the copy
      detector's terms.
    """
    pub = np.ascontiguousarray(published, np.float32)
    held = gate.check(np.ascontiguousarray(test, np.float32))
    pub_to_train = gate.check(pub)
    syn_index = ReferenceIndex(pub, gate.cfg, detector=gate.detector)
    train = gate.references  # the real slices, not the transform grid's variants
    out: dict[str, Any] = {"n_published": int(len(pub)), "n_test_patients": int(len(np.unique(test_groups))),
                           "metrics": {}}
    for m in gate.metrics:
        to_syn_train, _ = syn_index.search(m, np.ascontiguousarray(train, np.float32))
        to_syn_test, _ = syn_index.search(m, np.ascontiguousarray(test, np.float32))
        lo, hi = _patient_bootstrap(to_syn_train, np.asarray(gate.reference_groups), to_syn_test, np.asarray(test_groups),
                                    seed, n_boot) if gate.reference_groups is not None else (None, None)
        p05 = float(np.percentile(held.distances[m], 5))
        out["metrics"][m] = {
            "membership_auc": membership_auc(to_syn_train, to_syn_test),
            "membership_auc_ci95": [lo, hi],
            "held_out_p05": p05,
            "near_copy_share": float(np.mean(pub_to_train.distances[m] < p05)),
        }
    return out


def plot_audit(result: dict[str, Any], path: Path) -> None:
    """Histogram per metric: synthetic→train vs test→train nearest distances, threshold marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fedsynth.io_utils import atomic_write

    metrics = result["metrics"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.2), squeeze=False)
    for ax, (m, r) in zip(axes[0], metrics.items(), strict=True):
        a, b = np.asarray(r["hist"]["synthetic_to_train"]), np.asarray(r["hist"]["test_to_train"])
        bins = np.linspace(0, max(a.max(), b.max()) * 1.05 + 1e-9, 40)
        ax.hist(b, bins=bins, alpha=0.6, density=True, label="held-out real → train")
        ax.hist(a, bins=bins, alpha=0.6, density=True, label="synthetic → train")
        ax.axvline(r["threshold"], color="k", ls="--", lw=1, label="gate threshold")
        ax.set_title(f"{m}  (MIA AUC {r['membership_auc']:.2f})", fontsize=9)
        ax.set_xlabel("nearest distance")
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_write(path) as fh:
        fig.savefig(fh, format="png", dpi=90)
    plt.close(fig)
