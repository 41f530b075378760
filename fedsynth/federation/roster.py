"""The coordinator's roster: which sites take part, how to ask them, and who dropped out.

Every message of a study goes through :meth:`Roster.ask`: one message per
site, one wait, replies keyed by site id; a site that fails or does not
answer within the timeout is dropped (and named in the report), and the
study stops only when fewer than ``min_sites`` remain. The underlying grid is
metered (:class:`~fedsynth.federation.metering.MeteredGrid`), so every byte
is attributed to the method it served.

    >>> roster = Roster(grid, n_expected=3, n_min=2, timeout_s=600)
    >>> roster.connect()                                  # ping; learn site ids and counts
    >>> replies = roster.ask(roster.alive(), P.MSG_TRAIN_GENERATOR, lambda s: request, 600)
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from fedsynth.errors import FedsynthError
from fedsynth.federation import protocol as P
from fedsynth.federation.metering import MeteredGrid
from fedsynth.federation.names import Phase

__all__ = ["Roster", "Site", "StudyError"]

log = logging.getLogger(__name__)


class StudyError(FedsynthError):
    """The study cannot go on (e.g. fewer than ``min_sites`` sites remain)."""


@dataclass(frozen=True)
class Site:
    """A site in the study: its Flower node and what it said about itself."""

    node_id: int
    site_id: str
    info: P.SiteInfo


class Roster:
    """Live sites of one study; see the module docstring."""

    def __init__(
        self,
        grid: Grid,
        n_expected: int,
        n_min: int,
        timeout_s: float,
        connect_timeout_s: float = 600.0,
        simulated: bool = False,
        missing: dict[str, str] | None = None,
    ) -> None:
        self.grid = MeteredGrid(grid)
        self.n_expected, self.n_min = n_expected, n_min
        self.timeout_s, self.connect_timeout_s = timeout_s, connect_timeout_s
        self.simulated = simulated
        self.sites: dict[int, Site] = {}
        self.missing: dict[str, str] = dict(missing or {})

    @contextlib.contextmanager
    def method(self, label: str) -> Iterator[None]:
        """Attribute the bytes of the messages inside the block to ``label``."""
        with self.grid.method(label):
            yield

    def alive(self) -> list[Site]:
        """Sites still in the study, by site id (not by who answered first: the study runs the same every time)."""
        return sorted((s for s in self.sites.values() if s.site_id not in self.missing), key=lambda s: s.site_id)

    def alive_ids(self) -> list[str]:
        """Site ids still in the study, sorted."""
        return [s.site_id for s in self.alive()]

    def _check_enough(self, what: str) -> None:
        if len(self.alive()) < self.n_min:
            raise StudyError(
                f"only {len(self.alive())} site(s) {what}, fewer than min_sites={self.n_min} "
                f"(missing: {', '.join(f'{k} ({v})' for k, v in sorted(self.missing.items()))})"
            )

    def drop(self, site: Site, why: str) -> None:
        """Take ``site`` out of the study (it is named with ``why`` in the report)."""
        log.warning("site %s dropped from the study: %s", site.site_id, why)
        self.missing[site.site_id] = why
        self.grid.allowed_nodes = {s.node_id for s in self.alive()}
        self._check_enough("remain")

    def ask(
        self, sites: list[Site], message_type: str, content: Callable[[Site], RecordDict], timeout: float,
        errors: dict[str, str] | None = None,
    ) -> dict[str, Message]:
        """Send one message per site, wait, drop sites that fail or time out; replies by site id.

        With ``errors`` given, an error reply is recorded there instead of
        dropping the site (a gate that publishes nothing is a privacy outcome,
        not a site failure: the site still takes part in the baselines).
        """
        msgs = [Message(content(s), dst_node_id=s.node_id, message_type=message_type) for s in sites]
        by_node = {s.node_id: s for s in sites}
        replies = list(self.grid.send_and_receive(msgs, timeout=timeout))
        out: dict[str, Message] = {}
        for r in replies:
            site = by_node.get(r.metadata.src_node_id)
            if site is None:
                continue
            if r.has_error() and errors is not None:
                errors[site.site_id] = f"{message_type} failed: {r.error.reason}"
                log.warning("site %s: %s", site.site_id, errors[site.site_id])
            elif r.has_error():
                self.drop(site, f"{message_type} failed: {r.error.reason}")
            else:
                out[site.site_id] = r
        for s in sites:
            if s.site_id not in out and s.site_id not in self.missing and s.site_id not in (errors or {}):
                self.drop(s, f"no reply to {message_type} within {timeout:.0f} s")
        return out

    def connect(self) -> None:
        """Wait for the expected sites (or the connect timeout), ping them and record who they are."""
        t0 = time.time()
        while True:
            ids = list(self.grid.get_node_ids())
            if len(ids) >= self.n_expected or time.time() - t0 > self.connect_timeout_s:
                break
            log.info("waiting for sites: %d of %d connected", len(ids), self.n_expected)
            time.sleep(2.0)
        if len(ids) < self.n_min:
            raise StudyError(f"only {len(ids)} site(s) connected, fewer than min_sites={self.n_min}")
        ping = P.PingRequest().to_content()
        msgs = [Message(ping, dst_node_id=i, message_type=P.MSG_PING) for i in ids]
        with self.method(Phase.SETUP):
            replies = list(self.grid.send_and_receive(msgs, timeout=self.timeout_s))
        # deployment: a node is the site it was enrolled as (`flwr supernode register ... --name <site-id>`),
        # never what it says about itself
        enrolled = {} if self.simulated else {n.node_id: n.name for n in self.grid.get_nodes()}
        claims: dict[str, list[Site]] = {}
        for r in replies:
            if r.has_error():
                log.warning("node %s: site info failed: %s", r.metadata.src_node_id, r.error.reason)
                continue
            try:
                info = P.SiteInfo.from_content(r.content)
            except P.ProtocolError as err:
                log.warning("node %s: malformed site info: %s", r.metadata.src_node_id, err)
                continue
            node = r.metadata.src_node_id
            if not self.simulated and enrolled.get(node) != info.site_id:
                name = enrolled.get(node) or "no name"
                log.error("node %s claims to be %s but is enrolled as %s; it takes no part", node, info.site_id, name)
                self.missing.setdefault(info.site_id, f"a node enrolled as {name} claimed this id")
                continue
            if info.n_val == 0:  # every method stops on validation patients: a site without them cannot take part
                log.error("site %s has no validation patients; it takes no part", info.site_id)
                self.missing.setdefault(info.site_id, "no validation patients (set val_fraction in its site config)")
                continue
            claims.setdefault(info.site_id, []).append(Site(node, info.site_id, info))
        for site_id, nodes in claims.items():
            if len(nodes) > 1:  # one of them is not who it says; neither is trusted with the name
                log.error("site %s is claimed by %d nodes; none of them takes part", site_id, len(nodes))
                self.missing[site_id] = f"claimed by {len(nodes)} nodes"
            self.sites.update({n.node_id: n for n in nodes})
        answered = {s.site_id for s in self.sites.values()}
        for k in range(1, self.n_expected + 1):
            if self.simulated and f"site-{k}" not in answered:
                self.missing[f"site-{k}"] = "did not answer the site-info request"
        for s in self.alive():
            log.info("site %s: %d train / %d validation / %d test slices, %dpx", s.site_id, s.info.n_train,
                     s.info.n_val, s.info.n_test,
                     s.info.image_size)
        self.grid.allowed_nodes = {s.node_id for s in self.alive()}
        self.grid.order = {s.node_id: rank for rank, s in enumerate(self.alive())}
        self.grid.names = {s.node_id: s.site_id for s in self.alive()}
        self._check_enough("answered")
