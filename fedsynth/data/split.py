"""Patient-level train / validation / test split.

Slices of one patient are strongly correlated; splitting by slice would put
the same patient on both sides and inflate every test metric, and would let
the gate's reference set miss patients whose slices are being tested. The
validation patients exist so that every choice a study makes (early
stopping, tuning, the memorisation audit's held-out side) is made without
touching a test patient; the test patients are read once, by the final
evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedsynth.errors import DataError

__all__ = ["SPLIT_PARTS", "split_patients"]

#: The parts of a site's split, in the order patients are dealt to them.
SPLIT_PARTS = ("train", "val", "test")


def split_patients(
    patient_ids: Sequence[str], train_fraction: float, seed: int, val_fraction: float = 0.0, fold: int = 0
) -> dict[str, str]:
    """Assign each distinct patient to ``"train"``, ``"val"`` or ``"test"``, reproducibly by ``seed``.

    ``round(train_fraction * n)`` patients train and ``round(val_fraction * n)``
    validate (at least one each when the fraction is positive); the rest are
    test patients, at least one. Too few patients for that is an error.

    ``fold`` k > 0 is a re-split: the seeded order is rotated by k test-set
    sizes, so the test patients of folds 0, 1, ... are disjoint blocks and a
    patient is tested in at most one fold. Why disjoint: a study repeated
    over folds then has every (fold, patient) a distinct patient, and the
    patient stays the statistical unit when the folds are analysed together.
    More folds than disjoint test sets is an error.
    """
    if not 0.0 <= val_fraction < 1.0 or train_fraction + val_fraction >= 1.0:
        raise DataError(f"train fraction {train_fraction} + validation fraction {val_fraction} must be < 1")
    unique = sorted(set(patient_ids))
    n = len(unique)
    need = 3 if val_fraction > 0 else 2
    if n < need:
        parts = "train/validation/test" if val_fraction > 0 else "train/test"
        raise DataError(f"need at least {need} patients for a {parts} split, found {n}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(int(round(val_fraction * n)), 1) if val_fraction > 0 else 0
    n_train = min(max(int(round(train_fraction * n)), 1), n - n_val - 1)
    n_test = n - n_train - n_val
    if fold:
        if fold >= n // n_test:
            raise DataError(f"fold {fold}: {n} patients give only {n // n_test} disjoint test sets of {n_test}")
        order = np.roll(order, fold * n_test)
    part = {unique[i]: "train" for i in order[:n_train]}
    part.update({unique[i]: "val" for i in order[n_train : n_train + n_val]})
    return {pid: part.get(pid, "test") for pid in unique}
