"""Configuration of a federated study, a site daemon and the coordinator.

- :class:`ScenarioConfig` — one TOML file in ``simulations/``: the cohort to
  simulate, the generator profile, the gate settings, the publication quota,
  the downstream task, the training budget, ``min_sites``. The gate and task
  tables are typed by their owners' models (:class:`fedsynth.privacy.GateConfig`,
  :class:`fedsynth.tasks.TaskConfig`), so a typo fails when the file is
  loaded, before any site does work, and they are validated in one place.
- :class:`SiteSettings` — a site TOML in ``sites/``: the shared
  :class:`fedsynth.config.SiteConfig` plus where the signing key lives.
- :class:`CoordinatorSettings` — ``server/coordinator.toml`` for the
  Deployment Engine: which scenario, where the pool goes, the registered
  site keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from fedsynth.config import Modality, SiteConfig, StrictModel, load_toml
from fedsynth.errors import ConfigError
from fedsynth.privacy.config import GateConfig
from fedsynth.privacy.policy import GatePolicy
from fedsynth.tasks.config import Budget, TaskConfig

__all__ = [
    "CohortSettings",
    "CoordinatorSettings",
    "DaemonSettings",
    "GeneratorSettings",
    "PublishSettings",
    "ScenarioConfig",
    "SiteSettings",
    "TrainingSettings",
    "find_scenario",
    "load_scenario",
    "scenario_dirs",
]


class CohortSettings(StrictModel):
    """The bundled synthetic cohort a simulation makes (stands in for hospital archives)."""

    modality: Modality = "ct"
    sites: int = Field(3, ge=1, le=64)
    patients: int = Field(6, ge=2, description="patients per site (split by patient)")
    slices: int = Field(16, ge=1, description="axial slices per volume")
    size: int = Field(64, ge=16, le=512, description="slice edge length in pixels")
    train_fraction: float = Field(0.67, gt=0.0, lt=1.0)
    val_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="share of patients for validation: early "
                                "stopping and the memorisation audit's held-out side (never the test patients)")
    seed: int = Field(0, ge=0)
    splits: int = Field(1, ge=1, le=10, description="re-splits: the whole study (generators included) once per "
                        "patient split, test patients disjoint across splits, analysed together")
    fold: int = Field(0, ge=0, description="which split this run is (set by `fedsynth simulate` for each split)")

    @model_validator(mode="after")
    def _fold_in_range(self) -> CohortSettings:
        if self.fold >= self.splits:
            raise ValueError(f"fold {self.fold} is not one of the {self.splits} split(s)")
        if self.splits > 1:  # refused now, not after the first split's hour of training
            from fedsynth.data.split import split_patients
            from fedsynth.errors import DataError

            try:
                split_patients([str(i) for i in range(self.patients)], self.train_fraction, 0, self.val_fraction,
                               fold=self.splits - 1)
            except DataError as err:
                raise ValueError(f"splits = {self.splits}: {err}") from None
        return self


class GeneratorSettings(StrictModel):
    """The latent diffusion model each site trains (see :mod:`fedsynth.generative`)."""

    profile: str = Field("tiny", description="generator profile name (tiny, small)")
    overrides: dict[str, Any] = Field(default_factory=dict, description="profile fields to override")
    sample_steps: int | None = Field(None, ge=1, le=1000, description="sampling steps; None = profile")


class PublishSettings(StrictModel):
    """How many gate-certified images each site publishes, and how they travel."""

    quota: int = Field(64, ge=1, description="accepted images requested per site")
    max_candidates: int | None = Field(
        None, ge=1, description="candidates the gate may draw before giving up; None = 4 x quota"
    )
    review_poll_s: float = Field(10.0, gt=0, description="while a site's bundle waits for its release review, "
                                 "ask again this often (up to site_timeout_s)")
    chunk_images: int = Field(
        256, ge=1, description="images per publish reply (a bundle is fetched in chunks and reassembled)"
    )
    two_sample: bool = Field(
        True, description="each site also runs the classifier two-sample test on its published bundle against its "
        "training and validation patients (and the real-vs-real floor); the AUCs travel in the signed certificate")

    def candidate_limit(self) -> int:
        """The gate's ``max_attempts`` (candidates drawn), defaulting to four per requested image."""
        return self.max_candidates or 4 * self.quota


#: What each weight-averaging method may tune on validation (strategy arguments, and the local epochs per round).
TUNABLE: dict[str, tuple[str, ...]] = {
    "fedavg": ("local_epochs",),
    "fedprox": ("local_epochs", "proximal_mu"),
    "fedavgm": ("local_epochs", "server_learning_rate", "server_momentum"),
    "fedadam": ("local_epochs", "eta", "eta_l"),
}


class TrainingSettings(StrictModel):
    """One maximum budget and one stopping rule for every downstream training, and the seeds to repeat it with.

    Every method passes over its own training data at most ``max_epochs``
    times, is validated every ``check_every`` epochs on validation patients
    (a FedAvg round is ``check_every`` local epochs at every site) and keeps
    its best weights, stopping after ``patience`` validations without a lower
    validation MSE (:mod:`fedsynth.tasks.early_stopping`). The pooled
    network and FedAvg therefore see the same number of training samples at
    most (the pool holds about as many images as the sites' training sets
    together). ``seeds`` repeats every downstream training with seeds
    ``seed, seed + 1, ...`` (initial weights, patches, degradations).
    """

    max_epochs: int = Field(12, ge=1, description="most passes over a method's training data")
    check_every: int = Field(2, ge=1, description="epochs between validations = local epochs of a FedAvg round")
    patience: int = Field(2, ge=1, description="validations without improvement before a method stops")
    seeds: int = Field(1, ge=1, le=20, description="downstream training seeds (repeats of every method)")
    keep_client_optimizer: bool = Field(
        True, description="FedAvg-family sites keep their Adam state across rounds (False: fresh Adam per round)")
    second_strategy: Literal["fedprox", "fedadam", "fedavgm"] = "fedprox"
    proximal_mu: float = Field(0.01, ge=0.0, description="FedProx's mu when not tuned")
    tuning: dict[str, dict[str, list[float]]] = Field(
        default_factory=dict,
        description="per weight-averaging method, a grid tried on repeat 0 and chosen by validation MSE, e.g. "
        "{fedprox = {proximal_mu = [1e-4, 1e-3, 1e-2]}, fedavg = {local_epochs = [1, 2]}}")
    local_only: bool = True
    centralised: bool = Field(True, description="simulation-only upper bound (not deployable)")
    phase_scrambled_control: bool = Field(
        False, description="also train on the pool with each image's Fourier phase randomised (amplitude kept): "
        "what the pool's noise spectrum alone is worth, without its anatomy")
    untextured_control: bool = Field(
        False, description="also train on the pool's images before their noise texture (the gate's companions, "
        "published too; needs gate.require_companions): what the texture is worth")
    coordinator_threads: int = Field(
        1, ge=0, description="torch threads for training at the coordinator; 0 = torch's default. "
        "1 avoids OpenMP oversubscription when simulated sites share the cores"
    )

    @model_validator(mode="after")
    def _divisible(self) -> TrainingSettings:
        if self.max_epochs % self.check_every:
            raise ValueError("max_epochs must be a multiple of check_every (whole FedAvg rounds)")
        for method, grid in self.tuning.items():
            allowed = TUNABLE.get(method)
            if allowed is None:
                raise ValueError(f"tuning: '{method}' is not a weight-averaging method ({', '.join(TUNABLE)})")
            for name, values in grid.items():
                if name not in allowed:
                    raise ValueError(f"tuning.{method}: '{name}' is not tunable (one of {', '.join(allowed)})")
                if not values or any(v < 0 for v in values):
                    raise ValueError(f"tuning.{method}.{name}: give one or more non-negative values")
                if name == "local_epochs" and any(v < 1 or v != int(v) or self.max_epochs % int(v) for v in values):
                    raise ValueError(f"tuning.{method}.local_epochs: whole divisors of max_epochs only")
        return self

    def budget(self) -> Budget:
        """The budget and stopping rule every method shares."""
        return Budget(max_epochs=self.max_epochs, check_every=self.check_every, patience=self.patience)


class ScenarioConfig(StrictModel):
    """One named study: everything ``fedsynth simulate`` needs."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    cohort: CohortSettings = Field(default_factory=CohortSettings)
    generator: GeneratorSettings = Field(default_factory=GeneratorSettings)
    gate: GateConfig = Field(default_factory=GateConfig, description="the gate the coordinator asks for")
    publish: PublishSettings = Field(default_factory=PublishSettings)
    task: TaskConfig = Field(default_factory=lambda: TaskConfig(task="ldct"),
                             description="the downstream task every method trains")
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    margins: dict[str, float] = Field(
        default_factory=lambda: {"psnr": 0.5, "ssim": 0.01},
        description="TOST equivalence margins per metric",
    )
    site_policy: GatePolicy = Field(
        default_factory=GatePolicy,
        description="the privacy policy of every simulated site (a real site's is [privacy] in its own TOML)")
    site_policies: dict[str, GatePolicy] = Field(
        default_factory=dict, description="simulated sites with a policy of their own, by site id")
    min_sites: int = Field(2, ge=1)
    site_timeout_s: float = Field(1800.0, gt=0)
    seed: int = Field(0, ge=0)

    def policy_of(self, site_id: str) -> GatePolicy:
        """The privacy policy of simulated site ``site_id``."""
        return self.site_policies.get(site_id, self.site_policy)

    @model_validator(mode="after")
    def _min_sites(self) -> ScenarioConfig:
        if self.min_sites > self.cohort.sites:
            raise ValueError(f"min_sites ({self.min_sites}) exceeds cohort.sites ({self.cohort.sites})")
        if self.training.untextured_control and not self.gate.require_companions:
            raise ValueError("training.untextured_control needs gate.require_companions = true (the untextured "
                             "images must clear the gate too)")
        return self


class DaemonSettings(StrictModel):
    """Site daemon knobs that are not about the data."""

    signing_key: Path | None = Field(
        None, description="Ed25519 private key made here by `fedsynth site-keys`; default: the one key in workdir/keys/"
    )
    torch_threads: int = Field(0, ge=0, description="0 = leave torch's default")
    audit_dir: Path | None = Field(None, description="keep a copy of every outgoing message here")


class SiteSettings(StrictModel):
    """A site TOML: ``[site]`` (data, split), ``[daemon]`` (keys, threads) and ``[privacy]`` (the gate's floor).

    Without ``[privacy]`` the default :class:`~fedsynth.privacy.GatePolicy`
    applies (docs/privacy.md), never whatever the coordinator sends.
    """

    site: SiteConfig
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    privacy: GatePolicy = Field(default_factory=GatePolicy)


class CoordinatorSettings(StrictModel):
    """``server/coordinator.toml``: the study the coordinator runs on the Deployment Engine."""

    scenario: str = Field("default", description="scenario name in simulations/ or a TOML path")
    out: Path = Field(..., description="study directory: pool, checkpoints, report")
    site_keys: Path = Field(..., description="directory of registered <site>.pub signing keys")
    expected_sites: int = Field(..., ge=1)
    min_sites: int | None = Field(None, ge=1, description="overrides the scenario's min_sites")
    connect_timeout_s: float = Field(600.0, gt=0)


def scenario_dirs() -> list[Path]:
    """Where named scenarios are looked up: ./simulations, then the source tree's."""
    here = Path(__file__).resolve().parents[2] / "simulations"
    return [Path.cwd() / "simulations", here]


def find_scenario(name_or_path: str) -> Path:
    """Resolve a scenario name (``default``) or a TOML path to a file."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise ConfigError(f"{p}: scenario file not found")
        return p
    for d in scenario_dirs():
        cand = d / f"{name_or_path}.toml"
        if cand.is_file():
            return cand
    known = sorted({f.stem for d in scenario_dirs() if d.is_dir() for f in d.glob("*.toml")})
    raise ConfigError(f"unknown scenario '{name_or_path}' (known: {', '.join(known) or 'none'})")


def load_scenario(name_or_path: str) -> ScenarioConfig:
    """Load and validate a scenario by name or path, including its gate, task and generator tables.

    Everything is checked here, before any site does work, so a typo is one
    line naming the file and key rather than a failure minutes into a study.
    """
    from fedsynth.generative import load_profile

    path = find_scenario(name_or_path)
    scenario = load_toml(path, ScenarioConfig)
    try:
        load_profile(scenario.generator.profile, **scenario.generator.overrides)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return scenario
