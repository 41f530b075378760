"""Run a whole study on one machine with Flower's Simulation Engine.

:func:`fedsynth.federation.study_dir.prepare_simulation` makes what real
hospitals would already have (cohort, site keys, the coordinator's key
registry); :func:`run_simulated_study` then starts one SuperNode per site in
Ray (bound to 127.0.0.1 only) and the coordinator, both apps bound to the
prepared study directory.

    >>> report = run_simulated_study(load_scenario("default"), Path("runs/demo"))
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from fedsynth.errors import FedsynthError
from fedsynth.federation.config import ScenarioConfig
from fedsynth.federation.local_superlink import LocalSuperLink, app_dir
from fedsynth.federation.study_dir import StudyLayout, prepare_simulation
from fedsynth.io_utils import write_json_atomic
from fedsynth.runtime import apply_loopback_env

__all__ = ["run_simulated_study"]


def run_simulated_study(
    scenario: ScenarioConfig,
    out: Path,
    cpus_per_site: float | None = None,
    show_progress: bool = False,
    audit_dir: Path | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Prepare ``out`` and run the study on the Simulation Engine; returns ``report.json``'s content.

    The study runs through Flower's supported path: ``flwr run`` against a
    simulation SuperLink of its own on 127.0.0.1
    (:mod:`fedsynth.federation.local_superlink`), stopped when it ends.
    ``cpus_per_site``: the CPUs each site may use; default: all sites at once
    (cores / sites). Each simulated site trains with one torch thread, so on 2 cores
    three sites at once finish sooner than two at a time plus one alone (measured on the default
    study: generators 375 s vs 462 s, whole study 8 min 35 s vs 10 min 30 s, identical results).
    ``audit_dir``: every simulated site keeps a copy of each message it sends there (leak audit).
    The sites log to ``out/logs/sites.log``, the run's whole stream goes to
    ``out/logs/flwr-run.log``; ``verbose`` also relays it to this process's terminal.
    A study that fails raises its own one-line error (``coordinator/error.txt``).
    """
    apply_loopback_env()
    t0 = time.perf_counter()
    spec = prepare_simulation(scenario, Path(out), show_progress, audit_dir)
    prep = time.perf_counter() - t0
    layout = StudyLayout(spec.out)
    ncpu = max(1, os.cpu_count() or 1)
    if cpus_per_site is None:  # every site at once (each trains with one torch thread)
        cpus_per_site = ncpu / scenario.cohort.sites
    # Ray is told it has as many CPUs as sites may run at once, each site reserving one of them
    at_once = max(1, min(scenario.cohort.sites, math.floor(ncpu / cpus_per_site + 1e-9)))
    federation = {"num-supernodes": scenario.cohort.sites, "client-resources-num-cpus": 1,
                  "client-resources-num-gpus": 0, "init-args-num-cpus": at_once,
                  "init-args-log-to-driver": bool(verbose)}
    layout.error.unlink(missing_ok=True)
    # measured here, on an idle machine: inside the run the simulated sites' start-up shares the cores
    # (the probe read 17.6 GFLOP/s there against 55-88 on the idle machine minutes later)
    from fedsynth.machine_speed import machine_speed

    write_json_atomic(layout.machine, {**machine_speed(seconds=1.0), "measured_at": time.time()})
    with LocalSuperLink(layout.out / "flwr", log_file=layout.out / "logs" / "superlink.log") as link:
        link.run(app_dir(), {"scenario": scenario.name, "out": str(layout.out.resolve())}, federation,
                 log_file=layout.out / "logs" / "flwr-run.log", verbose=verbose)
    if layout.error.is_file():  # the ServerApp's own one-line error
        raise FedsynthError(layout.error.read_text(encoding="utf-8").strip())
    if not layout.report_json.is_file():
        raise FedsynthError(f"the simulation ended without writing {layout.report_json} "
                            f"(see {layout.out / 'logs' / 'flwr-run.log'})")
    report = json.loads(layout.report_json.read_text(encoding="utf-8"))
    report.setdefault("wall_seconds", {})["prepare_cohort_and_keys"] = prep
    return report
