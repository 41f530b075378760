"""Small hand-made NIfTI volumes for ingestion tests (no dependency on the cohort generator)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np


def ct_volume(seed: int, shape: tuple[int, int, int] = (40, 40, 6)) -> np.ndarray:
    """A disc of soft tissue (~40 HU) with a bone spot, in air (-1000 HU), in HU."""
    rng = np.random.default_rng(seed)
    x, y = np.mgrid[: shape[0], : shape[1]]
    cx, cy, r = shape[0] / 2 + rng.uniform(-3, 3), shape[1] / 2 + rng.uniform(-3, 3), shape[0] * 0.35
    disc = ((x - cx) ** 2 + (y - cy) ** 2) < r**2
    vol = np.full(shape, -1000.0)
    for z in range(shape[2]):
        sl = np.where(disc, 40.0 + rng.normal(0, 20, disc.shape), -1000.0)
        sl[int(cx) - 2 : int(cx) + 2, int(cy) - 2 : int(cy) + 2] = 700.0
        vol[..., z] = sl
    return vol


def write_ct(path: Path, seed: int, shape: tuple[int, int, int] = (40, 40, 6)) -> Path:
    """Write an int16 CT volume with scl_slope/inter so that get_fdata returns HU."""
    hu = ct_volume(seed, shape)
    stored = np.round(hu + 1024).astype(np.int16)
    img = nib.Nifti1Image(stored, np.diag([0.8, 0.8, 2.5, 1.0]))
    img.header.set_slope_inter(1.0, -1024.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def write_array(path: Path, data: np.ndarray) -> Path:
    """Write any array as NIfTI (float32)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.eye(4)), str(path))
    return path


def make_site(root: Path, n_patients: int = 4, prefix: str = "p") -> Path:
    """A site directory with ``n_patients`` CT volumes named ``<prefix>NNN.nii.gz``."""
    for i in range(n_patients):
        write_ct(root / f"{prefix}{i:03d}.nii.gz", seed=i)
    return root
