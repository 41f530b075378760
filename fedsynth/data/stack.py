"""Reading an image stack from whatever a user points a command at.

The stand-alone tools (``fedsynth gate``, ``fedsynth evaluate``) take a .npy
stack, an .npz, or a directory of NIfTI volumes. All three end up as one
(N, H, W) float32 array in [0, 1]; anything else is refused with one line.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from fedsynth.config import IngestSettings, Modality
from fedsynth.data.ingest import discover_volumes
from fedsynth.data.nifti import is_nifti, load_volume
from fedsynth.data.normalise import normalise_volume
from fedsynth.data.slices import axial_slices, resize_stack
from fedsynth.errors import DataError

__all__ = ["read_image_stack"]

_TOL = 1e-6


def _check_unit(arr: np.ndarray, source: Path) -> np.ndarray:
    if arr.dtype.kind not in "fiu":
        raise DataError(f"{source}: expected a numeric array, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3:
        raise DataError(f"{source}: expected an (N, H, W) stack, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise DataError(f"{source}: the stack is empty")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise DataError(f"{source}: {int((~np.isfinite(arr)).sum())} value(s) are NaN or infinite")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -_TOL or hi > 1.0 + _TOL:
        raise DataError(f"{source}: values must lie in [0, 1], found [{lo:.4g}, {hi:.4g}]")
    return np.clip(arr, 0.0, 1.0)


def read_image_stack(
    path: str | Path,
    size: int | None = None,
    modality: Modality | None = None,
    return_groups: bool = False,
    settings: IngestSettings | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray | None]:
    """Read ``path`` as an (N, H, W) float32 stack in [0, 1].

    - ``.npy``: an (N, H, W) (or (H, W), or (N, 1, H, W)) array already in [0, 1];
    - ``.npz``: the array named ``images``, or the only array in the file;
    - a directory of NIfTI volumes: every volume's axial slices, normalised by
      ``modality`` (required: the normalisation differs), sized ``size``
      (default 128); groups are the patient ids.

    With ``return_groups`` also returns one group id per image (patient ids for
    NIfTI directories, ``None`` for arrays). ``size`` resizes array inputs too.
    """
    path = Path(path)
    groups: np.ndarray | None = None
    if path.is_dir():
        if modality is None:
            raise DataError(f"{path}: a NIfTI directory needs --modality (ct, mri or pet)")
        settings = settings or IngestSettings()
        if size is not None:
            settings = settings.model_copy(update={"size": size})
        stacks, ids = [], []
        for vol_path, pid in discover_volumes(path):
            vol = load_volume(vol_path, frame=settings.frame, max_voxels=settings.max_voxels,
                              max_bytes=settings.max_bytes)
            unit = normalise_volume(vol.data, modality, settings, source=vol_path)
            slices, _ = axial_slices(unit, settings.size, settings.body_fraction)
            stacks.append(slices)
            ids += [pid] * slices.shape[0]
        images = np.concatenate(stacks, axis=0)
        if images.shape[0] == 0:
            raise DataError(f"{path}: no slice passed the body-fraction filter")
        groups = np.asarray(ids, dtype=str)
    elif not path.exists():
        raise DataError(f"{path}: no such file or directory")
    elif path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise DataError(f"{path}: not a readable .npy file ({str(err)[:120]})") from None
        images = _check_unit(np.asarray(arr), path)
    elif path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                names = list(npz.files)
                if "images" in names:
                    arr = npz["images"]
                elif len(names) == 1:
                    arr = npz[names[0]]
                else:
                    raise DataError(f"{path}: .npz holds {names}; name the stack 'images'")
                if "groups" in names:
                    groups = np.asarray(npz["groups"]).astype(str)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise DataError(f"{path}: not a readable .npz file ({str(err)[:120]})") from None
        images = _check_unit(np.asarray(arr), path)
        if groups is not None and groups.shape != (images.shape[0],):
            raise DataError(f"{path}: 'groups' must have one entry per image")
    elif is_nifti(path):
        raise DataError(f"{path}: pass the directory holding NIfTI volumes, not a single file")
    else:
        raise DataError(f"{path}: unsupported input; expected .npy, .npz or a directory of NIfTI files")
    if size is not None and images.shape[1:] != (size, size):
        images = resize_stack(images, size)
    images = np.ascontiguousarray(images, dtype=np.float32)
    return (images, groups) if return_groups else images
