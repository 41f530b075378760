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

__all__ = ["audit_synthetic", "membership_auc", "plot_audit"]


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
