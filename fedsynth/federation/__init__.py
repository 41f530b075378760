"""The federation: Flower site app, coordinator app, message protocol, synthetic pool, the study.

Import the apps by module (``fedsynth.federation.server_app:app``,
``fedsynth.federation.client_app:app``); this face exports the pieces a
researcher or operator calls, imported on first use so ``fedsynth --help``
stays fast.

    >>> from fedsynth.federation import load_scenario, run_simulated_study
    >>> report = run_simulated_study(load_scenario("default"), Path("runs/demo"))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedsynth.lazy import lazy_exports

exports = {
    "Method": "fedsynth.federation.names",
    "Phase": "fedsynth.federation.names",
    "ScenarioConfig": "fedsynth.federation.config",
    "SiteSettings": "fedsynth.federation.config",
    "StudyLayout": "fedsynth.federation.study_dir",
    "StudySpec": "fedsynth.federation.study_dir",
    "SyntheticPool": "fedsynth.federation.pool",
    "find_scenario": "fedsynth.federation.config",
    "load_scenario": "fedsynth.federation.config",
    "prepare_simulation": "fedsynth.federation.study_dir",
    "resolve_study": "fedsynth.federation.study_dir",
    "run_simulated_study": "fedsynth.federation.simulation",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, exports)

if TYPE_CHECKING:  # pragma: no cover
    from fedsynth.federation.config import (  # noqa: F401
        ScenarioConfig,
        SiteSettings,
        find_scenario,
        load_scenario,
    )
    from fedsynth.federation.names import Method, Phase  # noqa: F401
    from fedsynth.federation.pool import SyntheticPool  # noqa: F401
    from fedsynth.federation.simulation import run_simulated_study  # noqa: F401
    from fedsynth.federation.study_dir import (  # noqa: F401
        StudyLayout,
        StudySpec,
        prepare_simulation,
        resolve_study,
    )
