"""The coordinator's study: the ordered list of phases, and the state that lets it resume.

Each phase is a function in :mod:`fedsynth.federation.phases`; this module
runs them in order on a :class:`~fedsynth.federation.roster.Roster` (the live
sites, through a metered Flower ``Grid``), times them and records each one as
finished in ``coordinator/state.json`` (:class:`StudyState`), so a
coordinator that dies mid-study resumes where it stopped and never asks a
site to redo finished work. Sites that fail or time out are dropped and named
in the report; the study stops only when fewer than ``min_sites`` remain.

| # | phase | what |
| --- | --- | --- |
| 1 | ``setup`` | ping every node, learn its site id and counts |
| 2 | ``train-generators`` | every site trains (or resumes, or skips) its LDM |
| 3 | ``publish`` | every site publishes through its gate; bundles verified and pooled |
| 4 | ``synthetic-pool`` | the central network trained on the pool |
| 5 | ``fedavg``, ``fedprox``/``fedadam`` | Flower strategies on the sites' real data |
| 6 | ``local-only`` | each site alone |
| 7 | ``centralised-real`` | union of the sites' real data (simulation only) |
| 8 | ``evaluation`` | every model on every site's held-out test set |
| 9 | ``report`` | ``report.json`` + ``report.html`` |

    >>> report = Study(grid, spec).run()
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from flwr.serverapp import Grid

from fedsynth.errors import ConfigError
from fedsynth.federation.model_store import ModelStore
from fedsynth.federation.names import Phase
from fedsynth.federation.phases import StudyRun
from fedsynth.federation.phases.central import (
    centralised_real,
    phase_scrambled_pool,
    synthetic_pool,
    untextured_pool,
)
from fedsynth.federation.phases.evaluation import evaluate
from fedsynth.federation.phases.generators import train_generators
from fedsynth.federation.phases.local_only import local_only
from fedsynth.federation.phases.publish import publish
from fedsynth.federation.phases.weight_averaging import weight_averaging
from fedsynth.federation.pool import SyntheticPool
from fedsynth.federation.roster import Roster, StudyError
from fedsynth.federation.study_dir import StudyLayout, StudySpec, registered_key
from fedsynth.federation.study_report import build_report, closest_pairs, write_study_report
from fedsynth.federation.study_state import StudyState, merge_bytes

__all__ = ["Study", "StudyError", "StudySpec"]

log = logging.getLogger(__name__)


class Study:
    """Runs (or resumes) one study on ``grid``; see the module docstring."""

    def __init__(self, grid: Grid, spec: StudySpec) -> None:
        self.spec = spec
        self.layout = StudyLayout(spec.out)
        self.state = StudyState.load(self.layout.state)
        if self.state.done:
            log.info("study: resuming from %s (done: %s)", self.layout.state, ", ".join(self.state.done))
        self._bytes_before = {k: dict(v) for k, v in self.state.bytes.items()}
        sc = spec.scenario
        # sites dropped in an earlier run stay out: the methods they missed cannot be redone with them
        self.roster = Roster(grid, spec.n_expected, spec.n_min, sc.site_timeout_s, spec.connect_timeout_s,
                             simulated=spec.mode == "simulation", missing=self.state.missing)
        self.ctx = StudyRun(spec, self.roster, SyntheticPool(self.layout.pool),
                             ModelStore(self.layout, sc.task, sc.seed), self.state.training,
                             self.state.tuning)
        self.ctx.checkpoint = self._save
        self.roster.grid.on_progress = self._progress

    def phases(self) -> list[tuple[Phase, Callable[[], None]]]:
        """The phases after ``setup``, in order (those the scenario switches off are absent)."""
        r, t = self.ctx, self.spec.scenario.training
        second = Phase(t.second_strategy)
        steps: list[tuple[Phase, Callable[[], None]]] = [
            (Phase.TRAIN_GENERATORS, self._train_generators),
            (Phase.PUBLISH, self._publish),
            (Phase.SYNTHETIC_POOL, lambda: (self._check_pool(), synthetic_pool(r))),
            (Phase.FEDAVG, lambda: weight_averaging(r, Phase.FEDAVG)),
            (second, lambda: weight_averaging(r, second)),
        ]
        if t.phase_scrambled_control:
            steps.append((Phase.PHASE_SCRAMBLED, lambda: phase_scrambled_pool(r)))
        if t.untextured_control:
            steps.append((Phase.UNTEXTURED_POOL, lambda: untextured_pool(r)))
        if t.local_only:
            steps.append((Phase.LOCAL_ONLY, lambda: local_only(r)))
        if t.centralised:
            steps.append((Phase.CENTRALISED_REAL, lambda: centralised_real(r)))
        steps.append((Phase.EVALUATION,
                      lambda: evaluate(r, self.state.evaluations, self.state.test_patients, self._save)))
        return steps

    def _train_generators(self) -> None:
        self.state.generators.update(train_generators(self.ctx))

    def _publish(self) -> None:
        st = self.state
        st.privacy.update(publish(self.ctx, st.rejected_bundles, st.study_id, st.publish_nonce, st.generators))

    # ----------------------------------------------------------------- state
    def _save(self) -> None:
        self.state.bytes = merge_bytes(self._bytes_before, self.roster.grid.totals())
        self.state.missing = dict(self.roster.missing)
        self.state.participants.update(self.roster.grid.rounds())
        self.state.save(self.layout.state)

    def _progress(self, request: dict[str, Any]) -> None:
        """``coordinator/progress.json``: the request the study waits on (small, rewritten per request)."""
        from fedsynth.io_utils import write_json_atomic

        try:
            write_json_atomic(self.layout.progress, request)
        except OSError as err:  # the view is a convenience; the study goes on without it
            log.debug("progress not written: %s", err)

    def _check_pool(self) -> None:
        """Re-verify the pool (objects, rows, certificates) before it is trained on or reported."""
        from fedsynth.privacy import load_public_key

        def key_of(site: str) -> object | None:
            try:
                path = registered_key(self.spec.site_keys, site)
            except ConfigError:
                return None
            return load_public_key(path) if path.is_file() else None

        self.ctx.pool.check(key_of, self.state.study_id)

    def _phase(self, name: Phase, fn: Callable[[], None], step: str = "") -> None:
        if name in self.state.done:
            log.info("phase %s%s: already finished, skipped (resume)", step, name)
            return
        log.info("phase %s%s: start", step, name)
        self.state.started[name.value] = time.time()
        self._save()  # so the live page shows it running
        t0 = time.perf_counter()
        try:
            fn()
        except StudyError:
            self._save()
            raise
        dt = time.perf_counter() - t0
        self.state.wall_seconds[name.value] = self.state.wall_seconds.get(name.value, 0.0) + dt
        self.state.done.append(name.value)
        self._save()
        log.info("phase %s%s: done in %.1f s", step, name, dt)

    # ---------------------------------------------------------------- report
    def report(self) -> Any:
        """The study's report (a :class:`fedsynth.report.ReportModel`) from the state so far."""
        return build_report(self.spec, self.state, self.roster.alive_ids(), self.roster.missing,
                            self.ctx.pool.quarantined())

    def _fresh_machine_probe(self) -> dict[str, Any] | None:
        """The probe ``fedsynth simulate`` wrote for this run (at most an hour old), else None."""
        path = self.layout.machine
        try:
            probe = json.loads(path.read_text(encoding="utf-8"))
            if time.time() - float(probe.pop("measured_at")) < 3600 and float(probe["conv_gflops"]) > 0:
                return probe
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return None

    # -------------------------------------------------------------------- run
    def run(self) -> Any:
        """Run (or resume) every phase; returns the report."""
        t0 = time.perf_counter()
        from fedsynth.machine_speed import machine_speed

        steps = self.phases()
        self.state.planned = [Phase.SETUP.value, *(name.value for name, _ in steps), Phase.REPORT.value]
        self.state.started[Phase.SETUP.value] = time.time()
        self._save()
        # the report's wall times are read against this machine's conv speed: taken from `fedsynth simulate`,
        # which measures it before the simulated sites start; measured here while the sites are idle otherwise
        self.state.machine = self._fresh_machine_probe() or machine_speed(seconds=1.0)
        log.info("machine: %.1f GFLOP/s on the conv probe (%s, %s cores, %d threads)",
                 self.state.machine["conv_gflops"], self.state.machine["cpu"], self.state.machine["cores"],
                 self.state.machine["threads"])
        try:
            self.roster.connect()
        finally:
            self.state.wall_seconds[Phase.SETUP.value] = time.perf_counter() - t0
        if self.ctx.pool.count():  # a resumed study: what was pooled before must still check out
            self._check_pool()
        for i, (name, fn) in enumerate(steps, start=1):
            self._phase(name, fn, f"{i}/{len(steps)} ")
        t1 = time.perf_counter()
        self.state.started[Phase.REPORT.value] = time.time()
        closest = closest_pairs(self.spec, self.ctx.pool)
        write_study_report(self.layout, self.report(), self.ctx.pool, closest)
        self.state.wall_seconds[Phase.REPORT.value] = time.perf_counter() - t1
        self._save()
        report = self.report()
        write_study_report(self.layout, report, self.ctx.pool, closest)
        return report
