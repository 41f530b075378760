"""A site's session: who the site is (from its own config) and its opened data, once per run.

Why a session: a study sends a site dozens of messages (a FedAvg round, an
evaluation per model, a publish chunk). Resolving the site's settings and
opening its slice store is done on the first message of a run and reused by
the rest, so a message costs the work it asks for, not a re-read of the
site's data.

Where a site's settings come from (:func:`resolve_site`), in order:

1. node config ``site-config``: a site TOML (``sites/*.toml``, with its
   ``[privacy]`` policy) — deployment;
2. node config ``data-dir``/``workdir``/``modality`` (+ ``site-id``,
   ``image-size``, ``val-fraction`` (default 0.2), ``signing-key``, ``audit-dir``) — a quick deployment with
   the default privacy policy;
3. node config ``partition-id`` in a simulated study: the site is derived
   from the study's spec (:mod:`fedsynth.federation.study_dir`).

    >>> session = site_session(context, study_dir=None)
    >>> session.store().train_images().shape
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsynth.config import SiteConfig, load_toml
from fedsynth.errors import ConfigError
from fedsynth.federation.config import SiteSettings
from fedsynth.federation.study_dir import find_private_key, find_spec, simulated_site, site_key_dir
from fedsynth.privacy.policy import GatePolicy

__all__ = ["SiteRuntime", "SiteSession", "clear_sessions", "resolve_site", "site_session"]

log = logging.getLogger(__name__)

#: Sessions kept per process (a simulation actor serves several nodes; a deployed site one).
_MAX_SESSIONS = 16


@dataclass(frozen=True)
class SiteRuntime:
    """Everything a site action needs, resolved from the site's own config."""

    config: SiteConfig
    signing_key: Path
    torch_threads: int = 0
    audit_dir: Path | None = None
    policy: GatePolicy = field(default_factory=GatePolicy)
    simulated: bool = False  # a site of `fedsynth simulate`: nobody is there to review a release

    @property
    def site_id(self) -> str:
        return self.config.id

    @property
    def workdir(self) -> Path:
        return Path(self.config.workdir)


def resolve_site(
    node_config: dict[str, Any], run_config: dict[str, Any] | None = None, study_dir: Path | None = None
) -> SiteRuntime:
    """The site's runtime from its node config (see the module docstring for the order)."""
    if "site-config" in node_config:
        s = load_toml(str(node_config["site-config"]), SiteSettings)
        key = s.daemon.signing_key or find_private_key(site_key_dir(s.site.workdir))
        return SiteRuntime(s.site, Path(key), s.daemon.torch_threads, s.daemon.audit_dir, s.privacy)
    if "data-dir" in node_config:
        pid = int(node_config.get("partition-id", 0))
        cfg = SiteConfig(
            id=str(node_config.get("site-id", f"site-{pid + 1}")),
            modality=str(node_config.get("modality", "ct")),
            data_dir=Path(str(node_config["data-dir"])),
            workdir=Path(str(node_config["workdir"])),
            image_size=int(node_config.get("image-size", 128)),
            val_fraction=float(node_config.get("val-fraction", 0.2)),
        )
        key = node_config.get("signing-key") or find_private_key(site_key_dir(cfg.workdir))
        audit = node_config.get("audit-dir")
        return SiteRuntime(cfg, Path(str(key)), 0, Path(str(audit)) if audit else None)
    spec = find_spec(run_config or {}, study_dir)
    if spec is None or "partition-id" not in node_config:
        raise ConfigError(
            "site settings missing: give node config 'site-config' (a site TOML) or "
            "'data-dir'/'workdir', or run inside `fedsynth simulate`"
        )
    cfg = simulated_site(spec.out, spec.scenario, int(node_config["partition-id"]) + 1)
    return SiteRuntime(cfg, find_private_key(site_key_dir(cfg.workdir)), 1, spec.audit_dir,
                       spec.scenario.policy_of(cfg.id), simulated=True)


@dataclass
class SiteSession:
    """A resolved site plus what it opened; lives as long as the run (one per node)."""

    runtime: SiteRuntime
    _store: Any = field(default=None, repr=False)

    @property
    def site_id(self) -> str:
        return self.runtime.site_id

    def store(self) -> Any:
        """The site's slice store: ingested (or found in the cache) on first use, then kept open."""
        if self._store is None:
            from fedsynth.data import ingest_configured_site

            self._store = ingest_configured_site(self.runtime.config)
        return self._store

    def use_threads(self) -> None:
        """Apply the site's torch thread count (0 leaves torch's default)."""
        if self.runtime.torch_threads > 0:
            import torch

            torch.set_num_threads(self.runtime.torch_threads)


_SESSIONS: OrderedDict[tuple[Any, ...], SiteSession] = OrderedDict()


def site_session(context: Any, study_dir: Path | None = None) -> SiteSession:
    """The session of the node that received a message (a Flower ``Context``), made on first use.

    Keyed by run and node: a new run (or a new study in the same process)
    resolves the site again, the messages of one run share it.
    """
    key = (context.run_id, context.node_id, str(study_dir))
    session = _SESSIONS.get(key)
    if session is None:
        session = SiteSession(resolve_site(dict(context.node_config), dict(context.run_config), study_dir))
        _SESSIONS[key] = session
        while len(_SESSIONS) > _MAX_SESSIONS:
            _SESSIONS.popitem(last=False)
    else:
        _SESSIONS.move_to_end(key)
    return session


def clear_sessions() -> None:
    """Forget every session of this process (tests; a long-lived process that reloads site configs)."""
    _SESSIONS.clear()
