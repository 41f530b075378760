"""Can a small CNN tell two sets of slices apart? A classifier two-sample test with patients kept whole.

Why this measure: a Fréchet distance in the site's own autoencoder space
rates average-looking samples well (it compares Gaussian fits of features the
generator was trained to reproduce). A classifier trained from scratch to
separate synthetic from real slices has no such blind spot: if any feature —
missing anatomy, soft edges, wrong noise texture — gives the samples away,
it can find it, and its held-out ROC AUC says how often (0.5: it cannot
tell; 1.0: it always can). Lopez-Paz & Oquab, "Revisiting classifier
two-sample tests", ICLR 2017.

Protocol (:func:`two_sample_auc`), ``folds``-fold cross-fitting:

* Each side is split into folds *by group* when groups are given (the real
  side's patients: no patient has slices on both the training and the test
  side of a fold, or the classifier would learn patients, not realism); a
  group-free side (synthetic samples, independent draws) is split at random.
* Per fold a fresh MONAI ``Classifier`` (three conv layers of 16/32/64
  channels, the first at full resolution so fine texture is visible, batch
  norm, no residual units) is trained with Adam and class-weighted binary
  cross-entropy on random ``crop`` x ``crop`` patches of the other folds'
  slices (random left-right flips), ``epochs`` passes. Patches give the
  small network many more training examples than whole slices would.
* A held-out slice is scored by the mean logit over a 3 x 3 grid of patches;
  the fold's AUC is MONAI's ``compute_roc_auc``.

The cross-fitting is repeated ``repeats`` times with fresh fold assignments.
Reported: the mean AUC over every fold of every repeat, a t-based 95 % CI
over them (folds share training data, so it is optimistic: a yardstick, not
a test), and each fold's AUC.

The floor (:func:`real_vs_real_auc`): the same test between two halves of
one site's *real* patients. With few patients it is not 0.5 — patients
differ, and the classifier picks some of that up — so synthetic-vs-real is
read against it: a generator is as good as this test can see when its AUC
is at the floor.

    >>> r = two_sample_auc(real, synthetic, a_groups=real_patient_ids)   # {"auc": 0.93, "ci95": [...], ...}
    >>> floor = real_vs_real_auc(real, real_patient_ids)
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from fedsynth.errors import DataError

__all__ = ["real_vs_real_auc", "two_sample_auc", "two_sample_report"]

log = logging.getLogger(__name__)


def _fold_of(n: int, groups: np.ndarray | None, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold number per item; whole groups go to one fold (groups dealt round-robin after a shuffle)."""
    if groups is None:
        return rng.permutation(np.arange(n) % folds)
    groups = np.asarray(groups).astype(str)
    uniq = rng.permutation(np.unique(groups))
    if len(uniq) < folds:
        raise DataError(f"a grouped side needs at least {folds} groups (patients) for {folds} folds, got {len(uniq)}")
    fold_of_group = {g: i % folds for i, g in enumerate(uniq)}
    return np.array([fold_of_group[g] for g in groups])


def _random_crops(x: np.ndarray, crop: int, rng: np.random.Generator) -> np.ndarray:
    n, h, w = x.shape
    i, j = rng.integers(0, h - crop + 1, n), rng.integers(0, w - crop + 1, n)
    return np.stack([x[k, i[k] : i[k] + crop, j[k] : j[k] + crop] for k in range(n)])


def _train_and_score(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray, *, epochs: int,
                     crop: int, batch_size: int, lr: float, seed: int) -> float:
    import torch
    from monai.metrics import compute_roc_auc
    from monai.networks.nets import Classifier

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = Classifier(in_shape=(1, crop, crop), classes=1, channels=(16, 32, 64), strides=(1, 2, 2),
                     num_res_units=0, norm="BATCH")
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    pos = float(y_tr.sum())
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(y_tr) - pos) / max(pos, 1.0)))
    net.train()
    for _ in range(epochs):
        order = rng.permutation(len(x_tr))
        for b0 in range(0, len(order), batch_size):
            idx = order[b0 : b0 + batch_size]
            if len(idx) < 2:  # batch norm needs two
                continue
            xb = _random_crops(x_tr[idx], crop, rng)
            xb = np.where(rng.random(len(idx))[:, None, None] < 0.5, xb[:, :, ::-1], xb)
            opt.zero_grad()
            logits = net(torch.from_numpy(np.ascontiguousarray(xb[:, None], dtype=np.float32))).squeeze(1)
            loss_fn(logits, torch.from_numpy(y_tr[idx].astype(np.float32))).backward()
            opt.step()
    net.eval()
    starts = np.unique(np.linspace(0, x_te.shape[-1] - crop, 3).round().astype(int))
    with torch.no_grad():
        score = torch.zeros(len(x_te))
        for i in starts:
            for j in starts:
                patch = np.ascontiguousarray(x_te[:, None, i : i + crop, j : j + crop], dtype=np.float32)
                score += net(torch.from_numpy(patch)).squeeze(1)
    return float(compute_roc_auc(score, torch.from_numpy(y_te.astype(np.float32))))


def two_sample_auc(
    a: np.ndarray,
    b: np.ndarray,
    *,
    a_groups: np.ndarray | None = None,
    b_groups: np.ndarray | None = None,
    folds: int = 3,
    repeats: int = 3,
    epochs: int = 10,
    crop: int = 32,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
) -> dict[str, Any]:
    """Held-out ROC AUC of a small CNN separating ``a`` (label 0) from ``b`` (label 1), (N, H, W) in [0, 1].

    The ``folds``-fold cross-fitting is repeated ``repeats`` times with new
    fold assignments (with a handful of patients one assignment moves the AUC
    a lot). Returns ``{"auc", "ci95": [lo, hi], "folds": [AUC per fold and
    repeat], "n_a", "n_b", "protocol"}``. Deterministic given ``seed``.
    """
    import torch
    from scipy import stats

    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if a.ndim != 3 or b.ndim != 3 or a.shape[1:] != b.shape[1:]:
        raise DataError(f"two-sample test needs two (N, H, W) stacks of one image size, got {a.shape} and {b.shape}")
    if folds < 2:
        raise DataError(f"two-sample test needs at least 2 folds, got {folds}")
    if min(len(a), len(b)) < 2 * folds:
        raise DataError(f"two-sample test needs at least {2 * folds} slices per side, got {len(a)} and {len(b)}")
    crop = min(crop, a.shape[1], a.shape[2])
    rng = np.random.default_rng(seed)
    x = np.concatenate([a, b])
    y = np.concatenate([np.zeros(len(a)), np.ones(len(b))])
    aucs = []
    with torch.inference_mode(False):
        for r in range(repeats):
            fold = np.concatenate([_fold_of(len(a), a_groups, folds, rng), _fold_of(len(b), b_groups, folds, rng)])
            for f in range(folds):
                te = fold == f
                aucs.append(_train_and_score(x[~te], y[~te], x[te], y[te], epochs=epochs, crop=crop,
                                             batch_size=batch_size, lr=lr, seed=seed * 1000 + 10 * r + f))
    arr = np.asarray(aucs)
    half = float(stats.t.ppf(0.975, len(arr) - 1) * arr.std(ddof=1) / np.sqrt(len(arr)))
    auc = float(arr.mean())
    return {"auc": auc, "ci95": [max(0.0, auc - half), min(1.0, auc + half)], "folds": [float(v) for v in aucs],
            "n_a": int(len(a)), "n_b": int(len(b)),
            "protocol": f"{repeats} x {folds}-fold, patients kept whole, MONAI Classifier 16/32/64 on {crop}px "
                        f"patches, {epochs} epochs"}


def real_vs_real_auc(images: np.ndarray, groups: np.ndarray, *, seed: int = 0, **kwargs: Any) -> dict[str, Any]:
    """The floor: the same test between two halves of a site's real patients (split by patient, seeded)."""
    groups = np.asarray(groups).astype(str)
    uniq = np.random.default_rng([seed, 7]).permutation(np.unique(groups))
    first = set(uniq[: len(uniq) // 2])
    in_a = np.array([g in first for g in groups])
    return two_sample_auc(images[in_a], images[~in_a], a_groups=groups[in_a], b_groups=groups[~in_a], seed=seed,
                          **kwargs)


def two_sample_report(real: np.ndarray, groups: np.ndarray, synthetic: np.ndarray, *, seed: int = 0,
                      **kwargs: Any) -> dict[str, Any]:
    """Synthetic vs ``real`` (patients ``groups``) and the real-vs-real floor, as reported; numbers only.

    Too few patients or slices for the folds: ``{"skipped": reason}`` instead
    of a guess. ``real_patients`` is the number of distinct patients either way.
    """
    n_patients = int(len(np.unique(np.asarray(groups))))
    try:
        return {"synthetic_vs_real": two_sample_auc(real, synthetic, a_groups=groups, seed=seed, **kwargs),
                "real_vs_real": real_vs_real_auc(real, groups, seed=seed, **kwargs),
                "real_patients": n_patients}
    except DataError as err:
        return {"skipped": str(err), "real_patients": n_patients}
