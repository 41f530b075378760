"""The coordinator: a Flower ``ServerApp`` that runs one federated study.

Where the study comes from, in order:

1. ``$FEDSYNTH_STUDY`` or ``<out>/study.json`` (written by ``fedsynth simulate``);
2. run config ``coordinator`` = a ``server/*.toml`` (Deployment Engine);
3. run config ``scenario`` (+ optional ``out``): ``flwr run .`` on the local
   simulation — the study directory is prepared here (cohort, site keys).

The phases themselves are in :mod:`fedsynth.federation.study`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedsynth.federation.config import CoordinatorSettings, ScenarioConfig, load_scenario
from fedsynth.federation.site_task import load_study_spec
from fedsynth.federation.study import Study, StudySpec

__all__ = ["app", "resolve_study"]

log = logging.getLogger(__name__)


def resolve_study(run_config: dict[str, Any]) -> StudySpec:
    """The :class:`StudySpec` for this run (see the module docstring)."""
    from fedsynth.config import load_toml

    spec = load_study_spec(run_config)
    if spec is not None:
        out = Path(spec["out"])
        return StudySpec(ScenarioConfig.model_validate(spec["scenario"]), out,
                         Path(spec.get("site_keys") or out / "coordinator" / "site-keys"), spec["mode"])
    if str(run_config.get("coordinator", "")):
        c = load_toml(str(run_config["coordinator"]), CoordinatorSettings)
        return StudySpec(load_scenario(c.scenario), c.out, c.site_keys, "deployment", c.expected_sites,
                         c.min_sites, c.connect_timeout_s)
    from fedsynth.federation.config import default_study_dir
    from fedsynth.federation.simulation import prepare_simulation

    name = str(run_config.get("scenario", "default")) or "default"
    scenario = load_scenario(name)
    out = Path(str(run_config.get("out", "")) or default_study_dir(name)).expanduser()
    prepare_simulation(scenario, out)
    return resolve_study({"out": str(out)})


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run (or resume) the study and write ``report.json`` + ``report.html``."""
    if not logging.getLogger().handlers:  # `flwr run`: make phase/site progress reach the log stream
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec = resolve_study(dict(context.run_config))
    log.info("study %s (%s) in %s", spec.scenario.name, spec.mode, spec.out)
    Study(grid, spec).run()
