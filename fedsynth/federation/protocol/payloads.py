"""Payload records of the study protocol: image stacks, opaque blobs, chunked bundles, bytes on the wire.

Large payloads (image stacks, model weights) always travel as ``Array``s in an
``ArrayRecord``: Flower splits every ``Array`` into 5 MiB chunks on the wire.
Opaque blobs (the signed certificate) are carried as ``uint8`` arrays for the
same reason; ``ConfigRecord`` bytes are not chunked and would stall on large
values.

    >>> stack = record_to_images(images_to_record(images))       # (n, H, W) float32
    >>> nbytes = message_nbytes(msg)                               # bytes on the wire
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Message, RecordDict

from fedsynth.federation.protocol.keys import IMAGES_KEY, ProtocolError

__all__ = [
    "BundleAssembler",
    "blob_to_record",
    "chunk_ranges",
    "config_json",
    "images_to_record",
    "message_nbytes",
    "record_to_blob",
    "record_to_images",
    "recorddict_nbytes",
    "wire_roundtrip",
]

_IMAGES_ARRAY = "images"
_BLOB_ARRAY = "blob"


def images_to_record(images: np.ndarray) -> ArrayRecord:
    """Wrap an image stack ``(n, H, W)`` as an ``ArrayRecord`` (float32, C order)."""
    stack = np.ascontiguousarray(np.asarray(images, dtype=np.float32))
    if stack.ndim != 3:
        raise ProtocolError(f"image stack must be (n, H, W), got shape {stack.shape}")
    return ArrayRecord({_IMAGES_ARRAY: Array(stack)})


def record_to_images(record: Any) -> np.ndarray:
    """Inverse of :func:`images_to_record`; validates dtype and rank."""
    if not isinstance(record, ArrayRecord) or _IMAGES_ARRAY not in record:
        raise ProtocolError(f"record '{IMAGES_KEY}' must be an ArrayRecord with an 'images' array")
    stack = record[_IMAGES_ARRAY].numpy()
    if stack.dtype != np.float32 or stack.ndim != 3:
        raise ProtocolError(
            f"published images must be float32 (n, H, W), got {stack.dtype} {stack.shape}"
        )
    return stack


def blob_to_record(blob: bytes) -> ArrayRecord:
    """Carry opaque bytes as a ``uint8`` Array (chunked on the wire, unlike ConfigRecord bytes)."""
    return ArrayRecord({_BLOB_ARRAY: Array(np.frombuffer(blob, dtype=np.uint8).copy())})


def record_to_blob(record: Any) -> bytes:
    """Inverse of :func:`blob_to_record`."""
    if not isinstance(record, ArrayRecord) or _BLOB_ARRAY not in record:
        raise ProtocolError("blob record must be an ArrayRecord with a 'blob' array")
    arr = record[_BLOB_ARRAY].numpy()
    if arr.dtype != np.uint8 or arr.ndim != 1:
        raise ProtocolError(f"blob must be a 1-D uint8 array, got {arr.dtype} {arr.shape}")
    return arr.tobytes()


def chunk_ranges(n: int, chunk: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n)`` in pieces of at most ``chunk``."""
    if chunk < 1:
        raise ProtocolError(f"chunk size must be >= 1, got {chunk}")
    return [(i, min(i + chunk, n)) for i in range(0, n, chunk)]


class BundleAssembler:
    """Reassemble a published bundle from chunks that may arrive in any order.

    >>> asm = BundleAssembler(total=2000)
    >>> asm.add(0, first_chunk); ...; stack = asm.images()   # (2000, H, W) float32
    """

    def __init__(self, total: int) -> None:
        if total < 0:
            raise ProtocolError(f"bundle size must be >= 0, got {total}")
        self.total = int(total)
        self._parts: dict[int, np.ndarray] = {}

    def add(self, offset: int, images: np.ndarray) -> None:
        """Store the chunk starting at ``offset``; a chunk out of range or of another shape fails."""
        stack = np.asarray(images, dtype=np.float32)
        if stack.ndim != 3 or offset < 0 or offset + len(stack) > self.total:
            raise ProtocolError(
                f"chunk at offset {offset} of {len(stack)} images does not fit a bundle of {self.total}"
            )
        if self._parts:
            shape = next(iter(self._parts.values())).shape[1:]
            if stack.shape[1:] != shape:
                raise ProtocolError(f"chunk image shape {stack.shape[1:]} differs from {shape}")
        self._parts[int(offset)] = stack

    def missing(self) -> list[int]:
        """Image indices not yet covered (empty when complete)."""
        covered = np.zeros(self.total, dtype=bool)
        for off, part in self._parts.items():
            covered[off : off + len(part)] = True
        return np.flatnonzero(~covered).tolist()

    def complete(self) -> bool:
        return not self.missing()

    def images(self) -> np.ndarray:
        """The whole bundle in order; raises if a chunk is missing or chunks overlap."""
        if not self.complete():
            raise ProtocolError(f"bundle incomplete: {len(self.missing())} of {self.total} images missing")
        parts = [self._parts[k] for k in sorted(self._parts)]
        if sum(len(p) for p in parts) != self.total:
            raise ProtocolError("bundle chunks overlap")
        if not parts:
            return np.zeros((0, 0, 0), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(parts, axis=0))


def config_json(obj: Any) -> str:
    """Serialise a small settings object for a ``ConfigRecord`` string value."""
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json")
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _nested_nbytes(obj: Any) -> int:
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

    # Objects are content-addressed and pushed once each, exactly as the
    # SuperLink/SuperNode transport does; sum their serialised sizes.
    return sum(len(o.deflate()) for o in get_all_nested_objects(obj).values())


def message_nbytes(message: Message) -> int:
    """Bytes of ``message`` as serialised for the wire (metadata, records, array chunks)."""
    return _nested_nbytes(message)


def recorddict_nbytes(content: RecordDict) -> int:
    """Bytes of a ``RecordDict`` as serialised for the wire (without message metadata)."""
    return _nested_nbytes(content)


def wire_roundtrip(content: RecordDict) -> RecordDict:
    """Serialise ``content`` into the objects the transport pushes and inflate it back.

    Exactly what SuperLink/SuperNode do with a message body (every nested
    object deflated, sent by id, re-inflated), without a network: used to
    test that payloads survive the wire.
    """
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
    from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents

    contents = {oid: o.deflate() for oid, o in get_all_nested_objects(content).items()}
    out = inflate_object_from_contents(content.object_id, contents)
    if not isinstance(out, RecordDict):
        raise ProtocolError(f"wire round trip produced {type(out).__name__}, not a RecordDict")
    return out
