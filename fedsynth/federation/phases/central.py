"""Phases ``synthetic-pool`` and ``centralised-real``: the network trained at the coordinator.

``synthetic-pool`` is the product: the central network trained on the pool of
gate-certified synthetic images. ``centralised-real`` is the unreachable
upper bound — the union of every site's real training slices in one place —
which exists only in simulation: the coordinator opens the simulated sites'
slice stores through the data layer, as no deployment could.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from fedsynth.federation.names import Method, seeded
from fedsynth.federation.phases import StudyRun
from fedsynth.federation.study_dir import simulated_site

__all__ = ["centralised_real", "phase_scrambled_pool", "synthetic_pool", "train_central", "untextured_pool"]

log = logging.getLogger(__name__)


def train_central(run: StudyRun, method: str, images: np.ndarray, pixel_mm: np.ndarray) -> None:
    """Train the scenario's network on ``images`` at the coordinator, once per repeat, until validation says stop.

    Validated every ``check_every`` epochs on the sites' validation patients
    (:func:`~fedsynth.federation.phases.validation.federated_validator`);
    the best weights are saved as ``method`` (repeat 0) or ``method@seedK``.
    ``pixel_mm``: each image's pixel edge (the sites' certificates for
    synthetic images, the slice stores for real ones).
    """
    import torch

    from fedsynth.federation.phases.validation import federated_validator, summary
    from fedsynth.tasks import train_until_converged

    sc = run.spec.scenario
    if sc.training.coordinator_threads > 0:
        torch.set_num_threads(sc.training.coordinator_threads)
    budget = sc.training.budget()
    for k in run.repeats:
        name = seeded(method, k)
        if run.models.has(name):
            continue
        t0 = time.perf_counter()
        model = run.models.fresh(k)
        log.info("%s: up to %d epochs on %d images (seed %d)", name, budget.max_epochs, len(images), sc.seed + k)
        best, curve = train_until_converged(model, images, sc.task, sc.seed + k, budget,
                                            federated_validator(run, method), pixel_mm)
        run.training[name] = summary(curve, time.perf_counter() - t0)
        log.info("%s: best validation PSNR %.2f dB after %d of %d epochs", name,
                 run.training[name]["best_val_psnr"], run.training[name]["best_epoch"], curve[-1]["epoch"])
        run.models.save(name, best)
        run.checkpoint()


def synthetic_pool(run: StudyRun) -> None:
    """The central network on every pooled synthetic image."""
    train_central(run, Method.SYNTHETIC_POOL, run.pool.images(), _pool_pixel_mm(run))


def _pool_pixel_mm(run: StudyRun) -> np.ndarray:
    """Per pooled image, its site's pixel size; a bundle without one is an error for low-dose CT only."""
    pix = run.pool.pixel_mm()
    if run.spec.scenario.task.task == "ldct" and np.isnan(pix).any():
        from fedsynth.errors import DataError

        raise DataError("pool: a bundle's certificate states no pixel size (published before sites sent it); "
                        "re-run the publish phase")
    return pix


def phase_scrambled_pool(run: StudyRun) -> None:
    """The texture control: the same pool, each image's Fourier amplitude kept and its phase randomised.

    Derived at the coordinator from the certified images (nothing new leaves
    a site). If the pool beats this control, its anatomy carries part of the
    effect; if not, the effect is its noise spectrum.
    """
    from fedsynth.tasks.controls import phase_scramble

    train_central(run, Method.PHASE_SCRAMBLED, phase_scramble(run.pool.images(), run.spec.scenario.seed),
                  _pool_pixel_mm(run))


def untextured_pool(run: StudyRun) -> None:
    """The texture control: the same samples before the site added its noise texture.

    Each is the companion the site's gate certified with its textured image
    (so it is as far from every training slice as the gate demands) and
    named by digest in the signed certificate. Against synthetic-pool it
    says what the texture is worth; against phase-scrambled-pool, what the
    anatomy is.
    """
    train_central(run, Method.UNTEXTURED_POOL, run.pool.companions(), _pool_pixel_mm(run))


def centralised_real(run: StudyRun) -> None:
    """The upper bound on the union of the live sites' real training slices (simulation only)."""
    from fedsynth.data import ingest_configured_site

    if run.spec.mode != "simulation":
        log.info("centralised-real: skipped (simulation only)")
        return
    stores, pixel_mm = [], []
    for k in range(1, run.spec.scenario.cohort.sites + 1):
        site = simulated_site(run.spec.out, run.spec.scenario, k)
        if site.id in run.roster.missing:
            continue
        store = ingest_configured_site(site)
        stores.append(store.train_images())
        pixel_mm.append(store.pixel_mm_of("train"))
    train_central(run, Method.CENTRALISED_REAL, np.concatenate(stores, axis=0), np.concatenate(pixel_mm))
