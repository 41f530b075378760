"""Small synthetic "patients" for gate tests: smooth blobs on a zero background."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter


def patient_slices(rng: np.random.Generator, n: int, size: int = 24) -> np.ndarray:
    """``n`` slices of one patient: a shared anatomy that drifts slowly from slice to slice."""
    base = gaussian_filter(rng.standard_normal((size, size)), 2.5)
    drift = gaussian_filter(rng.standard_normal((size, size)), 2.5)
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    body = (((yy - c) / (0.36 * size)) ** 2 + ((xx - c) / (0.3 * size)) ** 2) < 1  # zero border of >= 4 px
    out = []
    for k in range(n):
        img = base + 0.15 * k * drift + 0.05 * rng.standard_normal((size, size))
        img = (img - img.min()) / (img.max() - img.min() + 1e-9)
        out.append(0.1 + 0.6 * img * body * (1 if k % 2 else 1) - 0.1 * (~body))
    return np.clip(np.stack(out), 0, 0.7).astype(np.float32)


def cohort(seed: int, patients: int = 5, per_patient: int = 6, size: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """(images, patient_ids) for ``patients`` patients."""
    rng = np.random.default_rng(seed)
    imgs = [patient_slices(rng, per_patient, size) for _ in range(patients)]
    ids = np.repeat([f"pt{p}" for p in range(patients)], per_patient)
    return np.concatenate(imgs), ids
