"""The steps of a study, each a function of a :class:`StudyRun` (what every phase works with).

The order and the saved state live in :mod:`fedsynth.federation.study`; a
phase here only does its work (and skips what is already on disk, so a
resumed study never asks a site twice for the same thing):

| module | phase(s) |
| --- | --- |
| :mod:`.generators` | every site trains (or resumes, or skips) its generator |
| :mod:`.publish` | every site publishes through its gate; bundles fetched in chunks, verified, pooled; privacy rows |
| :mod:`.central` | the network trained at the coordinator: on the synthetic pool, and centralised-real (simulation) |
| :mod:`.weight_averaging` | FedAvg and the second Flower strategy on the sites' real data |
| :mod:`.local_only` | each site trains alone |
| :mod:`.validation` | federated validation on the sites' validation patients (every method's stopping rule) |
| :mod:`.evaluation` | every model to every site; only metrics come back |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fedsynth.federation.model_store import ModelStore
from fedsynth.federation.pool import SyntheticPool
from fedsynth.federation.roster import Roster
from fedsynth.federation.study_dir import StudySpec

__all__ = ["StudyRun"]


@dataclass
class StudyRun:
    """What every phase works with: the spec, the live sites, the pool and the trained models."""

    spec: StudySpec
    roster: Roster
    pool: SyntheticPool
    models: ModelStore
    #: model name -> how it was trained (curve, steps, samples, seconds); the study saves it with its state
    training: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: weight-averaging method -> its tuning grid, what each setting scored on validation, the choice
    tuning: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: save the study's state now (after each trained model, so a killed coordinator keeps what finished)
    checkpoint: Callable[[], None] = field(default=lambda: None)

    @property
    def timeout_s(self) -> float:
        return self.spec.scenario.site_timeout_s

    @property
    def repeats(self) -> range:
        """The downstream repeats (seeds ``scenario.seed + k``)."""
        return range(self.spec.scenario.training.seeds)
