"""Checkpoint files of the site generator: atomic, versioned, self-describing.

Two files live in a generator's work directory:

``train_state.pt``
    everything needed to continue training exactly: networks, optimizers,
    EMA, LR schedulers, RNG states, stage/epoch/step, loss history, the
    config JSON and a fingerprint of the training images. Rewritten (temp
    file + rename) after every epoch.
``model.pt``
    what sampling needs: the config JSON, the autoencoder, the EMA UNet and
    the latent scale factor. Written once training has finished; its SHA-256
    (:func:`fedsynth.digests.file_sha256`) is the ``checkpoint_hash`` that
    goes into the privacy certificate.

Both are loaded with ``torch.load(weights_only=True)`` (no arbitrary pickle
code runs) and any unreadable, truncated, foreign or differently-versioned
file becomes a one-line :class:`CheckpointError`.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from fedsynth.errors import CheckpointError
from fedsynth.io_utils import atomic_write

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MODEL_FILE",
    "STATE_FILE",
    "load_checkpoint",
    "save_checkpoint",
]

FORMAT = "fedsynth-ldm"
FORMAT_VERSION = 1
MODEL_FILE = "model.pt"
STATE_FILE = "train_state.pt"


def save_checkpoint(path: Path, kind: str, payload: dict[str, Any]) -> None:
    """Serialise ``payload`` (tensors, state dicts, plain Python values) atomically."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": FORMAT_VERSION, "kind": kind, **payload}, buf)
    with atomic_write(path, "wb") as fh:
        fh.write(buf.getbuffer())


def load_checkpoint(path: Path, kind: str) -> dict[str, Any]:
    """Load a checkpoint of ``kind`` ("model" or "train_state"); :class:`CheckpointError` if unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for damaged zip/pickle data
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({reason})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a fedsynth LDM checkpoint")
    if obj.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {obj.get('version')!r}, this fedsynth reads {FORMAT_VERSION}"
        )
    if obj.get("kind") != kind:
        raise CheckpointError(f"{path}: holds a {obj.get('kind')!r} checkpoint, expected {kind!r}")
    return obj
