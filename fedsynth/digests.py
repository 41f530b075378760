"""Content digests: the one definition of "the same data" for arrays and files.

Why one module: a signed certificate binds the published images by digest,
the pool names its objects by the same digest, the gate's reference cache and
the training checkpoints refuse to be reused for different data by digest. If
two of those hashed "an image" differently, a correct image would fail
verification (or a checkpoint would resume on the wrong data). Every content
digest in fedsynth is computed here.

    >>> array_digest(images)                 # hex SHA-256 of shape + little-endian float32 bytes
    >>> file_sha256(Path("work/model.pt"))   # 'sha256:<hex>' of the file's bytes
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

import numpy as np

__all__ = ["Hasher", "array_digest", "file_sha256", "update_from_file"]

#: First-axis rows converted to float32 at a time: a huge stack (or a memmap) is never copied whole.
_ROWS = 1024
#: Bytes read from a file at a time.
_FILE_BLOCK = 1 << 20


class Hasher(Protocol):
    """What :func:`update_from_file` needs of a hash object (any :mod:`hashlib` one)."""

    def update(self, data: bytes, /) -> None: ...


def array_digest(arr: np.ndarray) -> str:
    """Hex SHA-256 over ``repr(shape)`` and the array's little-endian float32 bytes.

    The shape is hashed so that the same values in a different layout (one
    64x64 image vs. two 32x64 halves) never share a digest; the values are
    hashed as ``<f4`` whatever the input dtype or byte order, so the digest a
    site certifies is the one the coordinator recomputes from the received
    float32 pixels on any machine.
    """
    arr = np.asarray(arr)
    h = hashlib.sha256(repr(tuple(arr.shape)).encode())
    blocks = (arr,) if arr.ndim == 0 else (arr[i : i + _ROWS] for i in range(0, len(arr), _ROWS))
    for block in blocks:
        h.update(np.ascontiguousarray(block, dtype="<f4").tobytes())
    return h.hexdigest()


def update_from_file(h: Hasher, path: str | Path) -> None:
    """Feed the bytes of the file at ``path`` into the hash object ``h``, in 1 MiB blocks.

    Why streamed: volumes and checkpoints can be larger than the memory one
    should spend on hashing them.
    """
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_FILE_BLOCK), b""):
            h.update(block)


def file_sha256(path: str | Path) -> str:
    """``sha256:<hex>`` of a file's bytes (the prefix names the hash, as certificates record it)."""
    h = hashlib.sha256()
    update_from_file(h, path)
    return f"sha256:{h.hexdigest()}"
