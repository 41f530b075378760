"""Client mods of the site app: an audit copy of every outgoing message.

A hospital must be able to show what left it. With an audit directory in
the site's own config (``[daemon] audit_dir`` in the site TOML, node config
``audit-dir``, or the simulated study's ``audit_dir``) the site keeps, per
reply, the exact wire bytes (every serialised object of the message, as the
transport pushes them) and a decoded copy (arrays as ``.npy``, config/metric
values as JSON). The leak test reads these to prove no real slice, patient
id or path was sent.

Usage::

    app = ClientApp(mods=[make_audit_mod()])
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord

from fedsynth.io_utils import write_bytes_atomic, write_json_atomic

__all__ = ["make_audit_mod", "write_audit_record"]

log = logging.getLogger(__name__)

_counter = itertools.count()


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"bytes-hex": value.hex()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def write_audit_record(audit_dir: Path, message: Message, tag: str = "") -> Path:
    """Write ``message`` (wire bytes + decoded records) into a new folder under ``audit_dir``."""
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

    name = f"{time.time_ns()}-{os.getpid()}-{next(_counter)}-{message.metadata.message_type}{tag}"
    folder = Path(audit_dir) / name.replace("/", "_")
    folder.mkdir(parents=True, exist_ok=True)
    wire = b"".join(o.deflate() for o in get_all_nested_objects(message).values())
    write_bytes_atomic(folder / "wire.bin", wire)
    meta: dict[str, Any] = {
        "message_type": message.metadata.message_type,
        "has_error": message.has_error(),
        "error": message.error.reason if message.has_error() else None,
        "records": {},
    }
    if message.has_content():
        for key, rec in message.content.items():
            if isinstance(rec, ArrayRecord):
                meta["records"][key] = {"kind": "arrays", "arrays": list(rec.keys())}
                for akey, arr in rec.items():
                    np.save(folder / f"{key}.{akey}.npy".replace("/", "_"), arr.numpy())
            elif isinstance(rec, (ConfigRecord, MetricRecord)):
                kind = "config" if isinstance(rec, ConfigRecord) else "metrics"
                meta["records"][key] = {"kind": kind, "values": {k: _jsonable(v) for k, v in rec.items()}}
    write_json_atomic(folder / "meta.json", meta)
    return folder


def make_audit_mod(study_dir: Path | None = None) -> Callable[[Message, Context, Any], Message]:
    """A client mod: pass the message on, keep an audit copy of the reply where the site's config says.

    The audit directory is the one of the node's site session (resolved from
    the site's own config, see :mod:`fedsynth.federation.site_session`); a
    site whose settings cannot be resolved answers with an error, and that
    error reply is not audited.
    """

    def audit_mod(message: Message, context: Context, call_next: Any) -> Message:
        from fedsynth.federation.site_session import site_session

        reply = call_next(message, context)
        try:
            audit_dir = site_session(context, study_dir).runtime.audit_dir
        except Exception:  # noqa: BLE001 - the handler already answered (with an error); nothing to audit
            return reply
        if audit_dir:
            try:
                write_audit_record(Path(audit_dir), reply)
            except OSError as err:  # auditing must not change what the site answers
                log.error("audit: cannot write the audit copy: %s", err)
        return reply

    return audit_mod
