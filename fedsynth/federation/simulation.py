"""Run a whole study on one machine with Flower's Simulation Engine.

:func:`prepare_simulation` makes what real hospitals would already have: the
bundled cohort (one folder of NIfTI volumes per site), each site's Ed25519
signing key in the site's own workdir, and the coordinator's registry of the
sites' public keys. :func:`run_simulated_study` then starts one SuperNode per
site in Ray (bound to 127.0.0.1 only) and the coordinator ``ServerApp``.

    >>> report = run_simulated_study(load_scenario("default"), Path("runs/demo"))
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from fedsynth.federation.config import ScenarioConfig
from fedsynth.federation.site_task import STUDY_ENV, simulated_site, site_key_dir, write_study_spec

__all__ = ["LOOPBACK_ENV", "prepare_simulation", "run_simulated_study"]

log = logging.getLogger(__name__)

#: Environment every simulation sets (Flower notes: Ray on loopback only, no telemetry).
LOOPBACK_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
}


def prepare_simulation(scenario: ScenarioConfig, out: Path, show_progress: bool = False) -> Path:
    """Cohort, site keys, key registry and ``study.json`` under ``out``; returns the spec path.

    Idempotent: an existing cohort with the same settings and existing keys are reused.
    """
    from fedsynth.data.cohort import make_cohort
    from fedsynth.privacy import generate_site_key

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    c = scenario.cohort
    t0 = time.perf_counter()
    make_cohort(c.modality, c.sites, c.patients, out / "cohort", slices=c.slices, size=c.size,
                seed=c.seed, progress_bar=show_progress)
    registry = out / "coordinator" / "site-keys"
    registry.mkdir(parents=True, exist_ok=True)
    for k in range(1, c.sites + 1):
        site = simulated_site(out, scenario, k)
        keydir = site_key_dir(site.workdir)
        if not (keydir / "site.key").is_file():
            generate_site_key(keydir)
        shutil.copyfile(keydir / "site.pub", registry / f"{site.id}.pub")
    path = write_study_spec(out, scenario, "simulation")
    log.info("prepared %d simulated sites under %s in %.1f s", c.sites, out, time.perf_counter() - t0)
    return path


def run_simulated_study(
    scenario: ScenarioConfig,
    out: Path,
    cpus_per_site: float = 1.0,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Prepare ``out`` and run the study on the Simulation Engine; returns ``report.json``'s content."""
    from fedsynth.errors import FedsynthError

    for k, v in LOOPBACK_ENV.items():
        os.environ.setdefault(k, v)
    out = Path(out).resolve()
    t0 = time.perf_counter()
    spec = prepare_simulation(scenario, out, show_progress)
    prep = time.perf_counter() - t0
    os.environ[STUDY_ENV] = str(spec)
    from flwr.simulation import run_simulation

    from fedsynth.federation.client_app import app as client_app
    from fedsynth.federation.server_app import app as server_app

    ncpu = max(1, os.cpu_count() or 1)
    try:
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=scenario.cohort.sites,
            backend_config={
                "client_resources": {"num_cpus": cpus_per_site, "num_gpus": 0.0},
                "init_args": {"num_cpus": ncpu, "include_dashboard": False,
                              "_node_ip_address": "127.0.0.1", "log_to_driver": True},
            },
        )
    except FedsynthError:
        raise
    except Exception as err:  # the ServerApp's own error is re-raised by run_simulation
        cause = err
        while cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, FedsynthError):
            raise cause from None
        raise
    finally:
        os.environ.pop(STUDY_ENV, None)
    report_path = out / "report.json"
    if not report_path.is_file():
        raise FedsynthError(f"the simulation ended without writing {report_path} (see the log above)")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    report.setdefault("wall_seconds", {})["prepare_cohort_and_keys"] = prep
    return report
