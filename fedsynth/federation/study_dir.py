"""The study directory: its typed spec, its layout, and how a run finds it.

One owner for everything a study keeps on disk, so the coordinator, the
simulated sites and the CLI agree on where things are:

```
OUT/study.json                  the StudySpec (scenario, mode, key registry, ...)
OUT/cohort/site-<k>/            simulation: each site's NIfTI volumes
OUT/sites/site-<k>/             simulation: each site's workdir (keys/, slices/, generator/, published/)
OUT/coordinator/site-keys/      the registry: each site's public signing key and policy digest
OUT/coordinator/state.json      finished phases, evaluations, bytes (resume)
OUT/pool/                       the synthetic pool (objects/ + manifest.sqlite)
OUT/models/<method>.pt          every trained network
OUT/report.json, report.html    the evidence
OUT/logs/study.log, sites.log   everything the coordinator and (simulated) sites logged
```

Where a run's spec comes from (:func:`resolve_study`): a study directory the
apps were built for (``fedsynth simulate``), else the run config's
``coordinator`` (a ``server/*.toml``, Deployment Engine), else the run
config's ``out``/``scenario`` (``flwr run .`` on a local simulation, which
prepares the directory on first use). Nothing travels in environment
variables.

    >>> spec = prepare_simulation(load_scenario("tiny"), Path("runs/tiny"))
    >>> StudyLayout(spec.out).state
    PosixPath('runs/tiny/coordinator/state.json')
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from fedsynth.config import SiteConfig, StrictModel, load_toml, validate
from fedsynth.errors import ConfigError
from fedsynth.federation.config import CoordinatorSettings, ScenarioConfig, load_scenario
from fedsynth.io_utils import write_bytes_atomic, write_json_atomic

__all__ = [
    "STUDY_FILE",
    "StudyLayout",
    "StudySpec",
    "default_study_dir",
    "find_private_key",
    "find_spec",
    "load_spec",
    "policy_file",
    "prepare_simulation",
    "registered_key",
    "registered_policy",
    "resolve_study",
    "simulated_site",
    "site_key_dir",
    "write_spec",
]

log = logging.getLogger(__name__)

STUDY_FILE = "study.json"


class StudySpec(StrictModel):
    """Everything the coordinator (and, in simulation, every site) needs to know about one study."""

    scenario: ScenarioConfig
    out: Path = Field(..., description="the study directory")
    site_keys: Path = Field(..., description="registry of the sites' public signing keys (<site-id>.pub)")
    mode: Literal["simulation", "deployment"] = "simulation"
    expected_sites: int | None = Field(None, ge=1, description="deployment: sites to wait for")
    min_sites: int | None = Field(None, ge=1, description="overrides the scenario's min_sites")
    connect_timeout_s: float = Field(600.0, gt=0)
    audit_dir: Path | None = Field(
        None, description="simulation: simulated sites keep a copy of every outgoing message here")

    @property
    def n_expected(self) -> int:
        return self.expected_sites or self.scenario.cohort.sites

    @property
    def n_min(self) -> int:
        return self.min_sites or self.scenario.min_sites


@dataclass(frozen=True)
class StudyLayout:
    """Paths inside a study directory (see the module docstring)."""

    out: Path

    @property
    def spec(self) -> Path:
        return self.out / STUDY_FILE

    @property
    def cohort(self) -> Path:
        return self.out / "cohort"

    @property
    def registry(self) -> Path:
        return self.out / "coordinator" / "site-keys"

    @property
    def state(self) -> Path:
        return self.out / "coordinator" / "state.json"

    @property
    def error(self) -> Path:
        """The one-line error of a study that failed (written by the coordinator app, read by the CLI)."""
        return self.out / "coordinator" / "error.txt"

    @property
    def machine(self) -> Path:
        """The conv probe measured by ``fedsynth simulate`` before the simulated sites start (read by the study)."""
        return self.out / "coordinator" / "machine.json"

    @property
    def progress(self) -> Path:
        """The request the coordinator is waiting on, site by site (rewritten as it changes)."""
        return self.out / "coordinator" / "progress.json"

    @property
    def pool(self) -> Path:
        return self.out / "pool"

    @property
    def models(self) -> Path:
        return self.out / "models"

    def model(self, name: str) -> Path:
        return self.models / f"{name}.pt"

    @property
    def study_log(self) -> Path:
        return self.out / "logs" / "study.log"

    @property
    def site_log(self) -> Path:
        return self.out / "logs" / "sites.log"

    @property
    def report_json(self) -> Path:
        return self.out / "report.json"

    @property
    def report_html(self) -> Path:
        return self.out / "report.html"


def default_study_dir(scenario: str) -> Path:
    """Study directory of ``flwr run .`` when the run config names none (same for both apps)."""
    return Path.home() / "fedsynth-runs" / Path(scenario).stem


def write_spec(spec: StudySpec) -> Path:
    """Write ``OUT/study.json`` atomically; returns its path."""
    path = StudyLayout(spec.out).spec
    write_json_atomic(path, spec.model_dump(mode="json"))
    return path


def load_spec(out: Path) -> StudySpec | None:
    """The spec of the study in ``out``, or None when there is none; one-line error when malformed."""
    import json

    path = StudyLayout(Path(out)).spec
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: unreadable study spec ({type(err).__name__})") from None
    return validate(StudySpec, data, str(path))


def find_spec(run_config: dict[str, Any], study_dir: Path | None = None) -> StudySpec | None:
    """The spec a simulated run shares: the bound study directory, else the run config's ``out``/``scenario``."""
    if study_dir is not None:
        spec = load_spec(study_dir)
        if spec is None:
            raise ConfigError(f"{study_dir}: no {STUDY_FILE}; prepare the study first")
        return spec
    if str(run_config.get("out", "")):
        return load_spec(Path(str(run_config["out"])).expanduser())
    if str(run_config.get("scenario", "")):
        return load_spec(default_study_dir(str(run_config["scenario"])))
    return None


# ------------------------------------------------------------------ sites
def site_key_dir(workdir: Path) -> Path:
    """Where a site keeps its Ed25519 signing key when no path is configured."""
    return Path(workdir) / "keys"


def find_private_key(keydir: Path) -> Path:
    """The one private signing key in ``keydir``; one-line error when there is none or several."""
    cands = sorted(p for p in Path(keydir).glob("*") if p.is_file() and not p.name.endswith(".pub"))
    if len(cands) != 1:
        raise ConfigError(f"{keydir}: expected exactly one private signing key, found {len(cands)}")
    return cands[0]


_SITE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # SiteConfig.id: never a path


def _registry_file(site_keys: Path, site_id: str, suffix: str) -> Path:
    if not _SITE_ID.fullmatch(site_id) or site_id in (".", ".."):
        raise ConfigError(f"{site_id[:40]!r} is not a site id (letters, digits, '.', '_', '-')")
    return Path(site_keys) / f"{site_id}{suffix}"


def registered_key(site_keys: Path, site_id: str) -> Path:
    """Where the coordinator's registry keeps a site's public signing key (``<site-id>.pub``)."""
    return _registry_file(site_keys, site_id, ".pub")


def policy_file(site_keys: Path, site_id: str) -> Path:
    """Where the coordinator's registry keeps a site's privacy-policy digest (``<site-id>.policy``)."""
    return _registry_file(site_keys, site_id, ".policy")


def registered_policy(site_keys: Path, site_id: str) -> str | None:
    """The site's privacy-policy digest registered with the coordinator, if any."""
    path = policy_file(site_keys, site_id)
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


def simulated_site(out: Path, scenario: ScenarioConfig, index: int) -> SiteConfig:
    """Site ``index`` (1-based) of a simulated study rooted at ``out``."""
    c = scenario.cohort
    return SiteConfig(
        id=f"site-{index}",
        modality=c.modality,
        data_dir=StudyLayout(Path(out)).cohort / f"site-{index}",
        workdir=Path(out) / "sites" / f"site-{index}",
        image_size=c.size,
        train_fraction=c.train_fraction,
        val_fraction=c.val_fraction,
        seed=c.seed,
        fold=c.fold,
    )


# --------------------------------------------------------------- prepare
def prepare_simulation(
    scenario: ScenarioConfig, out: Path, show_progress: bool = False, audit_dir: Path | None = None
) -> StudySpec:
    """Cohort, site keys, key registry and ``study.json`` under ``out``; returns the spec.

    Makes what real hospitals would already have: one folder of NIfTI
    volumes per site, each site's signing key in the site's own workdir (made
    there, as a site would), and the coordinator's registry of the public
    halves and of each site's privacy-policy digest. Idempotent: an existing cohort with the same settings and
    existing keys are reused.
    """
    from fedsynth.data.cohort import make_cohort
    from fedsynth.privacy import generate_site_key

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    layout = StudyLayout(out)
    c = scenario.cohort
    t0 = time.perf_counter()
    make_cohort(c.modality, c.sites, c.patients, layout.cohort, slices=c.slices, size=c.size,
                seed=c.seed, progress_bar=show_progress)
    layout.registry.mkdir(parents=True, exist_ok=True)
    for k in range(1, c.sites + 1):
        site = simulated_site(out, scenario, k)
        keydir = site_key_dir(site.workdir)
        if not (keydir / "site.key").is_file():
            generate_site_key(keydir)
        shutil.copyfile(keydir / "site.pub", registered_key(layout.registry, site.id))
        write_bytes_atomic(policy_file(layout.registry, site.id), scenario.policy_of(site.id).digest().encode())
    spec = StudySpec(scenario=scenario, out=out, site_keys=layout.registry, mode="simulation",
                     audit_dir=Path(audit_dir).resolve() if audit_dir else None)
    write_spec(spec)
    log.info("prepared %d simulated sites under %s in %.1f s", c.sites, out, time.perf_counter() - t0)
    return spec


# --------------------------------------------------------------- resolve
def resolve_study(run_config: dict[str, Any], study_dir: Path | None = None) -> StudySpec:
    """The :class:`StudySpec` of this run (see the module docstring for the order)."""
    if study_dir is not None:
        return find_spec(run_config, study_dir)  # type: ignore[return-value]  # raises when absent
    if str(run_config.get("coordinator", "")):
        c = load_toml(str(run_config["coordinator"]), CoordinatorSettings)
        return StudySpec(scenario=load_scenario(c.scenario), out=c.out, site_keys=c.site_keys,
                         mode="deployment", expected_sites=c.expected_sites, min_sites=c.min_sites,
                         connect_timeout_s=c.connect_timeout_s)
    spec = find_spec(run_config)
    if spec is not None:
        return spec
    name = str(run_config.get("scenario", "default")) or "default"
    out = Path(str(run_config.get("out", "")) or default_study_dir(name)).expanduser()
    return prepare_simulation(load_scenario(name), out)
