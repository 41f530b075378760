"""Phases ``synthetic-pool`` and ``centralised-real``: the network trained at the coordinator.

``synthetic-pool`` is the product: the central network trained on the pool of
gate-certified synthetic images. ``centralised-real`` is the unreachable
upper bound — the union of every site's real training slices in one place —
which exists only in simulation: the coordinator opens the simulated sites'
slice stores through the data layer, as no deployment could.
"""

from __future__ import annotations

import logging

import numpy as np

from fedsynth.federation.names import Method
from fedsynth.federation.phases import StudyRun
from fedsynth.federation.study_dir import simulated_site

__all__ = ["centralised_real", "synthetic_pool", "train_central"]

log = logging.getLogger(__name__)


def train_central(run: StudyRun, method: str, images: np.ndarray) -> None:
    """Train the scenario's network on ``images`` for ``training.epochs`` epochs; save it as ``method``."""
    import torch

    from fedsynth.tasks import fit_epochs

    sc = run.spec.scenario
    if sc.training.coordinator_threads > 0:
        torch.set_num_threads(sc.training.coordinator_threads)
    model = run.models.fresh()
    log.info("%s: %d epochs on %d images", method, sc.training.epochs, len(images))
    res = fit_epochs(model, images, sc.task, sc.training.epochs, sc.seed)
    log.info("%s: final loss %.5f", method, float(res["loss"]))
    run.models.save(method, model.state_dict())


def synthetic_pool(run: StudyRun) -> None:
    """The central network on every pooled synthetic image."""
    train_central(run, Method.SYNTHETIC_POOL, run.pool.images())


def centralised_real(run: StudyRun) -> None:
    """The upper bound on the union of the live sites' real training slices (simulation only)."""
    from fedsynth.data import ingest_configured_site

    if run.spec.mode != "simulation":
        log.info("centralised-real: skipped (simulation only)")
        return
    stores = []
    for k in range(1, run.spec.scenario.cohort.sites + 1):
        site = simulated_site(run.spec.out, run.spec.scenario, k)
        if site.id in run.roster.missing:
            continue
        stores.append(ingest_configured_site(site).train_images())
    train_central(run, Method.CENTRALISED_REAL, np.concatenate(stores, axis=0))
