"""The federation: Flower site app, coordinator app, message protocol, synthetic pool.

Import the apps by module (``fedsynth.federation.server_app:app``,
``fedsynth.federation.client_app:app``); this package only re-exports the
pieces without heavy imports.

    >>> from fedsynth.federation import load_scenario, run_simulated_study
    >>> report = run_simulated_study(load_scenario("default"), Path("runs/demo"))
"""

from fedsynth.federation.config import ScenarioConfig, SiteSettings, find_scenario, load_scenario
from fedsynth.federation.pool import BundleRecord, SyntheticPool, image_digest
from fedsynth.federation.simulation import prepare_simulation, run_simulated_study

__all__ = [
    "BundleRecord",
    "ScenarioConfig",
    "SiteSettings",
    "SyntheticPool",
    "find_scenario",
    "image_digest",
    "load_scenario",
    "prepare_simulation",
    "run_simulated_study",
]
