"""A ``Grid`` wrapper that counts the bytes of every message, per method.

The study compares methods by what they cost in communication, so every
message the coordinator sends and every reply it receives goes through
:class:`MeteredGrid`, which adds the message's serialised size (see
:func:`fedsynth.federation.protocol.message_nbytes`) to the current method's
``sent``/``received`` counters. Flower's strategies take any ``Grid``, so the
FedAvg baselines are metered the same way as the custom publish loop.

It also restricts ``get_node_ids()`` to the sites still in the study, so a
strategy never samples a site that has already failed, and returns replies in
a fixed order (``order``: node id -> rank, the roster's site-id order) rather
than in the order they arrived: Flower's strategies sum the sites' weights in
reply order, and a floating-point sum in arrival order would make FedAvg's
result depend on which site finished first. For every ``train`` request it
records which sites answered (:meth:`rounds`), so the report can say who
took part in each round of each weight-averaging method. ``on_progress`` is
told each request's sites when it goes out and how each answered when the
replies are in (the live page and terminal view show it).

Usage::

    meter = MeteredGrid(grid)
    with meter.method("fedavg"):
        FedAvg(...).start(grid=meter, ...)
    meter.totals()   # {"fedavg": {"sent": ..., "received": ...}}
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flwr.app import Message, MessageType, RecordDict
from flwr.proto.node_pb2 import NodeInfo  # noqa: F401 - the type Grid.get_nodes returns
from flwr.serverapp import Grid

from fedsynth.federation.protocol import message_nbytes

__all__ = ["MeteredGrid"]


class MeteredGrid(Grid):
    """Delegates to ``inner`` and meters bytes per method label."""

    def __init__(self, inner: Grid) -> None:
        self._inner = inner
        self._label = "other"
        self._bytes: dict[str, dict[str, int]] = {}
        self.allowed_nodes: set[int] | None = None
        self.order: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self._rounds: dict[str, list[list[str]]] = {}
        #: called with the current request (``progress``) when it is sent and when its replies are in
        self.on_progress: Callable[[dict[str, Any]], None] | None = None
        self.progress: dict[str, Any] = {}

    @contextlib.contextmanager
    def method(self, label: str) -> Iterator[None]:
        """Attribute the bytes of messages exchanged inside the block to ``label``."""
        old, self._label = self._label, label
        try:
            yield
        finally:
            self._label = old

    def _count(self, kind: str, messages: Iterable[Message]) -> None:
        slot = self._bytes.setdefault(self._label, {"sent": 0, "received": 0})
        for m in messages:
            slot[kind] += message_nbytes(m)

    def totals(self) -> dict[str, dict[str, int]]:
        """Bytes per method label: ``{"sent": n, "received": n}``."""
        return {k: dict(v) for k, v in self._bytes.items()}

    # --- Grid interface ---------------------------------------------------
    def set_run(self, run) -> None:  # noqa: ANN001 - flwr Run
        self._inner.set_run(run)

    @property
    def run(self):  # noqa: ANN201 - flwr Run
        return self._inner.run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return self._inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_nodes(self) -> Iterable[NodeInfo]:
        nodes = list(self._inner.get_nodes())
        if self.allowed_nodes is None:
            return nodes
        return [n for n in nodes if n.node_id in self.allowed_nodes]

    def get_node_ids(self) -> Iterable[int]:
        ids = list(self._inner.get_node_ids())
        if self.allowed_nodes is None:
            return ids
        return [i for i in ids if i in self.allowed_nodes]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        msgs = list(messages)
        self._count("sent", msgs)
        return self._inner.push_messages(msgs)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self._inner.pull_messages(message_ids))
        self._count("received", replies)
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        msgs = list(messages)
        self._count("sent", msgs)
        asked = [self._name(m.metadata.dst_node_id) for m in msgs]
        self._report({"method": self._label, "message": msgs[0].metadata.message_type if msgs else "",
                      "since": time.time(), "sites": dict.fromkeys(asked, "working")})
        replies = list(self._inner.send_and_receive(msgs, timeout=timeout))
        self._count("received", replies)
        answered = {self._name(r.metadata.src_node_id): not r.has_error() for r in replies}
        self._report({**self.progress, "until": time.time(), "sites": {
            s: ("replied" if answered[s] else "error") if s in answered else "no reply" for s in asked}})
        last = len(self.order)
        replies = sorted(replies, key=lambda m: (self.order.get(m.metadata.src_node_id, last), m.metadata.src_node_id))
        if msgs and all(m.metadata.message_type == MessageType.TRAIN for m in msgs):
            ok = [self.names.get(r.metadata.src_node_id, str(r.metadata.src_node_id))
                  for r in replies if not r.has_error()]
            self._rounds.setdefault(self._label, []).append(ok)
        return replies

    def _name(self, node_id: int) -> str:
        """The site's id once the roster knows it; before that a short form of the node id."""
        return self.names.get(node_id) or f"node …{str(node_id)[-4:]}"

    def _report(self, progress: dict[str, Any]) -> None:
        self.progress = progress
        if self.on_progress is not None:
            self.on_progress(progress)

    def rounds(self) -> dict[str, list[list[str]]]:
        """Per method label, one entry per training request: the sites whose reply was not an error."""
        return {k: [list(r) for r in v] for k, v in self._rounds.items()}
