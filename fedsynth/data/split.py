"""Patient-level train/test split.

Slices of one patient are strongly correlated; splitting by slice would put
the same patient on both sides and inflate every test metric, and would let
the gate's reference set miss patients whose slices are being tested.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedsynth.errors import DataError

__all__ = ["split_patients"]


def split_patients(patient_ids: Sequence[str], train_fraction: float, seed: int) -> dict[str, str]:
    """Assign each distinct patient to ``"train"`` or ``"test"``, reproducibly by ``seed``.

    At least one patient lands on each side; fewer than two patients is an error.
    """
    unique = sorted(set(patient_ids))
    if len(unique) < 2:
        raise DataError(f"need at least 2 patients for a train/test split, found {len(unique)}")
    order = np.random.default_rng(seed).permutation(len(unique))
    n_train = int(round(train_fraction * len(unique)))
    n_train = min(max(n_train, 1), len(unique) - 1)
    train = {unique[i] for i in order[:n_train]}
    return {pid: ("train" if pid in train else "test") for pid in unique}
