"""Reading NIfTI volumes safely.

Hospitals' exports are messy: truncated uploads, DICOM folders renamed to
``.nii``, 4-D perfusion series, NaNs from failed reconstructions, headers
whose dimensions are garbage. Every such file must be refused with one line
naming it, before anything is cached, so the privacy gate's reference set is
exactly the data the operator meant.
"""

from __future__ import annotations

import gzip
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedsynth.config import DEFAULT_MAX_BYTES, DEFAULT_MAX_VOXELS
from fedsynth.errors import DataError

__all__ = ["NIFTI_SUFFIXES", "Volume", "check_header_size", "is_nifti", "load_volume"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass(frozen=True)
class Volume:
    """A 3-D volume in canonical (RAS+) orientation, in scanner units (HU for CT)."""

    data: np.ndarray  # (X, Y, Z) float32
    affine: np.ndarray  # (4, 4)
    path: Path

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis."""
        return tuple(float(v) for v in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))


def is_nifti(path: Path) -> bool:
    """True when the file name says NIfTI (content is checked by :func:`load_volume`)."""
    name = path.name.lower()
    return any(name.endswith(s) for s in NIFTI_SUFFIXES) and not name.startswith(".")


def check_header_size(
    path: Path, shape: tuple[int, ...], dtype: np.dtype, max_voxels: int, max_bytes: int
) -> None:
    """Refuse a header whose shape is non-positive or larger than the bounds.

    Runs on the header alone, before any voxel is read: a forged or corrupt
    header claiming e.g. 30000^3 voxels must be a one-line :class:`DataError`,
    not a ``MemoryError`` (or the machine swapping) halfway through an ingest.
    Python integers, so a NIfTI-2 header's 64-bit dimensions cannot overflow.
    """
    if any(s < 1 for s in shape):
        raise DataError(f"{path}: header shape {shape} has a zero or negative dimension")
    voxels = math.prod(shape)
    if voxels > max_voxels:
        raise DataError(f"{path}: header shape {shape} is {voxels:,} voxels, above the bound of "
                        f"{max_voxels:,} (ingest setting max_voxels)")
    nbytes = voxels * int(dtype.itemsize)
    if nbytes > max_bytes:
        raise DataError(f"{path}: header shape {shape} of {dtype} is {nbytes:,} bytes of voxel data, "
                        f"above the bound of {max_bytes:,} (ingest setting max_bytes)")


def load_volume(
    path: str | Path,
    frame: int | None = None,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Volume:
    """Load ``path`` as a 3-D float32 volume in canonical orientation.

    Scanner scaling (``scl_slope``/``scl_inter``) is applied, so CT comes back
    in Hounsfield units. A 4-D image needs ``frame``; 2-D images are refused.
    The header's shape is checked against ``max_voxels`` and ``max_bytes``
    (see :func:`check_header_size`) before any voxel data is read.
    Raises :class:`DataError` with the file name for every unusable input.
    """
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        img = nib.load(str(path))
    except (ImageFileError, HeaderDataError, EOFError, OSError, zlib.error, gzip.BadGzipFile,
            ValueError) as err:
        raise DataError(f"{path}: not a readable NIfTI file ({_reason(err)})") from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise DataError(f"{path}: not a NIfTI image (nibabel read it as {type(img).__name__})")
    header_shape = tuple(int(s) for s in img.header.get_data_shape())
    check_header_size(path, header_shape, img.header.get_data_dtype(), max_voxels, max_bytes)
    shape = tuple(int(s) for s in img.shape)
    # Trailing singleton dimensions (X, Y, Z, 1) are still a 3-D volume.
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) < 3 or min(shape[:3]) < 1 or (len(shape) == 3 and shape[2] < 1):
        raise DataError(f"{path}: expected a 3-D volume, got shape {tuple(img.shape)}")
    if len(shape) > 4:
        raise DataError(f"{path}: expected a 3-D volume, got {len(shape)}-D shape {tuple(img.shape)}")
    try:
        canonical = nib.as_closest_canonical(img)
        data = np.asanyarray(canonical.dataobj, dtype=np.float32)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as err:
        raise DataError(f"{path}: truncated or corrupt image data ({_reason(err)})") from None
    data = data.reshape(data.shape[:3] + data.shape[3:len(shape)])
    if data.ndim == 4:
        if frame is None:
            raise DataError(
                f"{path}: 4-D image with {data.shape[3]} frames; choose one with --frame N"
            )
        if not 0 <= frame < data.shape[3]:
            raise DataError(f"{path}: frame {frame} out of range (image has {data.shape[3]} frames)")
        data = data[..., frame]
    if data.ndim != 3 or min(data.shape) < 1:
        raise DataError(f"{path}: expected a 3-D volume, got shape {tuple(img.shape)}")
    if data.shape[0] < 2 or data.shape[1] < 2:
        raise DataError(f"{path}: expected a 3-D volume, got a 2-D image of shape {tuple(img.shape)}")
    finite = np.isfinite(data)
    if not finite.all():
        bad = int((~finite).sum())
        raise DataError(f"{path}: {bad} voxel(s) are NaN or infinite")
    return Volume(data=np.ascontiguousarray(data), affine=np.asarray(canonical.affine), path=path)


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text[:160]
