"""The cached slice store of a site.

One directory per (inputs, settings) key holding ``images.npy`` (an
(N, H, W) float32 array, opened as a read-only memmap) and ``index.json``
(per slice: patient id, volume file, slice index, split, and pixel edge in mm
from the volume's voxel spacing, which the low-dose CT physics needs). The directory is
built under a temporary name and renamed into place, so a killed ingest
leaves either the previous complete store or nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedsynth.errors import DataError
from fedsynth.io_utils import atomic_dir

__all__ = ["STORE_VERSION", "SliceStore", "open_store", "write_store"]

STORE_VERSION = 2


@dataclass(frozen=True)
class SliceStore:
    """Normalised 2-D slices of one site with the provenance of every slice.

    ``patient_ids``, ``volume_files`` and ``slice_indices`` never leave the
    site: they exist for the split, the gate's calibration and local audits.
    """

    path: Path
    images: np.ndarray  # (N, H, W) float32 in [0, 1]
    patient_ids: np.ndarray  # (N,) str
    volume_files: np.ndarray  # (N,) str, relative to the site directory
    slice_indices: np.ndarray  # (N,) int
    split: np.ndarray  # (N,) "train" | "val" | "test"
    meta: dict
    pixel_mm: np.ndarray  # (N,) float64, pixel edge in mm

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def _select(self, part: str) -> np.ndarray:
        return np.flatnonzero(self.split == part)

    def train_images(self) -> np.ndarray:
        """Training slices (in memory), shape (n, H, W)."""
        return np.ascontiguousarray(self.images[self._select("train")])

    def test_images(self) -> np.ndarray:
        """Held-out test slices (in memory), shape (n, H, W)."""
        return np.ascontiguousarray(self.images[self._select("test")])

    def images_of(self, part: str) -> np.ndarray:
        """The slices of one split part (``train``, ``val`` or ``test``), shape (n, H, W)."""
        return np.ascontiguousarray(self.images[self._select(part)])

    def patient_ids_of(self, part: str) -> np.ndarray:
        """Patient id of each slice of one split part."""
        return self.patient_ids[self._select(part)]

    def pixel_mm_of(self, *parts: str) -> np.ndarray:
        """Pixel edge (mm) of each slice of the split parts named, in the order of :meth:`parts`."""
        return np.concatenate([self.pixel_mm[self._select(p)] for p in parts]) if parts else self.pixel_mm[:0]

    def typical_pixel_mm(self) -> float:
        """Median pixel edge (mm) of the training slices: what a generator trained on them produces."""
        return float(np.median(self.pixel_mm_of("train")))

    def parts(self, *names: str) -> tuple[np.ndarray, np.ndarray]:
        """Slices and patient ids of several split parts, concatenated in the order named (empty parts skipped)."""
        names = tuple(n for n in names if len(self._select(n)))
        if not names:
            return self.images[:0], self.patient_ids[:0]
        return (np.concatenate([self.images_of(n) for n in names]),
                np.concatenate([self.patient_ids_of(n) for n in names]))

    def val_images(self) -> np.ndarray:
        """Validation slices: what every choice is made on (empty when the site has no validation patients)."""
        return self.images_of("val")

    def val_patient_ids(self) -> np.ndarray:
        """Patient id of each validation slice."""
        return self.patient_ids_of("val")

    def train_patient_ids(self) -> np.ndarray:
        """Patient id of each training slice."""
        return self.patient_ids[self._select("train")]

    def test_patient_ids(self) -> np.ndarray:
        """Patient id of each test slice."""
        return self.patient_ids[self._select("test")]

    def patients(self, part: str | None = None) -> list[str]:
        """Distinct patient ids, optionally of one split part."""
        ids = self.patient_ids if part is None else self.patient_ids[self._select(part)]
        return sorted(set(ids.tolist()))


def write_store(
    path: Path,
    images: np.ndarray,
    patient_ids: list[str],
    volume_files: list[str],
    slice_indices: list[int],
    split: list[str],
    meta: dict,
    pixel_mm: list[float],
) -> SliceStore:
    """Write a store directory atomically and return it opened."""
    n = images.shape[0]
    if not (len(patient_ids) == len(volume_files) == len(slice_indices) == len(split) == len(pixel_mm) == n):
        raise ValueError("slice store columns have different lengths")
    with atomic_dir(path) as tmp:
        arr = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.float32, shape=images.shape)
        arr[...] = images
        arr.flush()
        del arr
        index = {
            "version": STORE_VERSION,
            "meta": meta,
            "patient_ids": list(patient_ids),
            "volume_files": list(volume_files),
            "slice_indices": [int(i) for i in slice_indices],
            "split": list(split),
            "pixel_mm": [float(v) for v in pixel_mm],
        }
        (tmp / "index.json").write_text(json.dumps(index, indent=1))
    return open_store(path)


def open_store(path: str | Path) -> SliceStore:
    """Open a store written by :func:`write_store`; :class:`DataError` if incomplete."""
    path = Path(path)
    index_file, images_file = path / "index.json", path / "images.npy"
    if not index_file.is_file() or not images_file.is_file():
        raise DataError(f"{path}: not a slice store (index.json or images.npy missing)")
    try:
        index = json.loads(index_file.read_text())
        images = np.load(images_file, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: corrupt slice store ({err})") from None
    if index.get("version") != STORE_VERSION:
        raise DataError(f"{path}: slice store version {index.get('version')!r}, expected {STORE_VERSION}")
    n = images.shape[0]
    if images.ndim != 3 or len(index["patient_ids"]) != n or len(index["split"]) != n \
            or len(index.get("pixel_mm", ())) != n:
        raise DataError(f"{path}: corrupt slice store (index does not match images)")
    return SliceStore(
        path=path,
        images=images,
        patient_ids=np.asarray(index["patient_ids"], dtype=str),
        volume_files=np.asarray(index["volume_files"], dtype=str),
        slice_indices=np.asarray(index["slice_indices"], dtype=np.int64),
        split=np.asarray(index["split"], dtype=str),
        meta=index["meta"],
        pixel_mm=np.asarray(index["pixel_mm"], dtype=np.float64),
    )
