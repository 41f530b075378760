"""What a site's generator is worth to the task, measured on its validation patients.

Why: image-similarity numbers do not say whether synthetic slices can stand in
for real ones as training targets; the task says. For each named training set
— the site's real training slices, the same slices passed through the
generator's representation (the *representation ceiling*: the best any
sampler could do with that representation), the generator's samples — the
task network is trained by the study's own rule (validated every
``check_every`` epochs on the validation patients, best weights kept,
``patience`` checks without improvement end it, ``max_epochs`` at most) and
scored on the validation patients' slices, degraded with one fixed seed, per
patient. The degraded input is scored too. Test patients are never read.

Both arms of a gap are stopped and scored on the same validation patients,
so each is optimistic by the same selection; the gap between them is the
number to read, per patient and per seed. With two validation patients it is
a diagnostic, not a verdict.

>>> res = task_value({"real": (train, pix), "samples": (synth, pix_s)}, val, val_pix, val_ids, cfg, budget)
>>> res["sets"]["samples"]["psnr"] - res["sets"]["real"]["psnr"]
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from fedsynth.tasks.config import Budget, TaskConfig
from fedsynth.tasks.degrade import make_pairs
from fedsynth.tasks.early_stopping import train_until_converged
from fedsynth.tasks.evaluate import evaluate_pairs
from fedsynth.tasks.training import predict

__all__ = ["FIDELITY_SEED", "site_fidelity", "task_value"]

log = logging.getLogger(__name__)

#: Degradation seed of the validation pairs (the study's validation seed, so the numbers are comparable).
FIDELITY_SEED = 4099


def _per_patient(values: np.ndarray, patients: np.ndarray) -> dict[str, float]:
    return {str(p): float(values[patients == p].mean()) for p in np.unique(patients)}


def task_value(
    sets: dict[str, tuple[np.ndarray, np.ndarray | float | None]],
    val_images: np.ndarray,
    val_pixel_mm: np.ndarray | float | None,
    val_patients: np.ndarray,
    cfg: TaskConfig,
    budget: Budget,
    seeds: int = 1,
    seed: int = 0,
    reference: str = "real",
) -> dict[str, Any]:
    """Train the task network on each named ``(images, pixel_mm)`` set; score every one on the validation pairs.

    Returns ``{"input": {...}, "sets": {name: {"psnr", "ssim", "per_patient", "per_seed", "epochs",
    "seconds"}}, "gaps": {name: {"psnr", "ssim", "per_patient"}}}`` where gaps are ``name - reference``
    (per patient: the mean over seeds of the patient's mean over its slices).
    """
    import torch

    from fedsynth.tasks.networks import build_network

    inputs, targets = make_pairs(val_images, cfg, FIDELITY_SEED, val_pixel_mm)
    patients = np.asarray(val_patients)
    if len(patients) != len(targets):
        raise ValueError("one patient id per validation slice is needed")

    def validate(model: Any) -> dict[str, float]:
        return {"val_mse": float(np.mean((predict(model, inputs, cfg) - targets) ** 2))}

    out: dict[str, Any] = {"n_val_slices": int(len(targets)), "n_val_patients": int(len(np.unique(patients))),
                           "seeds": seeds, "budget": budget.model_dump(), "sets": {}}
    input_metrics = None
    for name, (images, pixel_mm) in sets.items():
        per_seed, psnr_rows, ssim_rows, epochs = [], [], [], []
        t0 = time.perf_counter()
        for k in range(seeds):
            torch.manual_seed(seed + k)
            model = build_network(cfg)
            best, curve = train_until_converged(model, images, cfg, seed + k, budget, validate, pixel_mm)
            model.load_state_dict(best)
            metrics, _ = evaluate_pairs(model, inputs, targets, cfg)
            input_metrics = metrics
            psnr_rows.append(metrics["psnr"])
            ssim_rows.append(metrics["ssim"])
            epochs.append(int(next(p for p in curve if p.get("best"))["epoch"]))
            per_seed.append(float(metrics["psnr"].mean()))
        psnr, ssim = np.mean(psnr_rows, axis=0), np.mean(ssim_rows, axis=0)
        out["sets"][name] = {
            "n_train": int(len(images)), "psnr": float(psnr.mean()), "ssim": float(ssim.mean()),
            "per_patient": _per_patient(psnr, patients), "per_patient_ssim": _per_patient(ssim, patients),
            "per_seed": per_seed, "best_epochs": epochs, "seconds": round(time.perf_counter() - t0, 1),
            "_psnr": psnr, "_ssim": ssim,
        }
        log.info("task value: %s -> validation PSNR %.2f dB (%d seeds)", name, psnr.mean(), seeds)
    assert input_metrics is not None, "no training set given"
    out["input"] = {"psnr": float(input_metrics["input_psnr"].mean()),
                    "ssim": float(input_metrics["input_ssim"].mean()),
                    "per_patient": _per_patient(input_metrics["input_psnr"], patients)}
    if reference in out["sets"]:
        ref = out["sets"][reference]
        out["gaps"] = {}
        for name, s in out["sets"].items():
            if name == reference:
                continue
            d_psnr, d_ssim = s["_psnr"] - ref["_psnr"], s["_ssim"] - ref["_ssim"]
            out["gaps"][name] = {"psnr": float(d_psnr.mean()), "ssim": float(d_ssim.mean()),
                                 "per_patient": _per_patient(d_psnr, patients)}
    for s in out["sets"].values():
        del s["_psnr"], s["_ssim"]
    return out


def site_fidelity(
    gen: Any,
    store: Any,
    cfg: TaskConfig,
    budget: Budget,
    seeds: int = 1,
    n_samples: int | None = None,
    seed: int = 0,
    two_sample: bool = True,
) -> dict[str, Any]:
    """Every diagnostic of a site's generator, on its training and validation patients (never test).

    * task value on the validation patients (:func:`task_value`): the real
      training slices; their representation (``gen.represent``; skipped, and
      said, when the representation is exact: it would train the same
      network twice); the generator's samples (as many as training slices,
      or ``n_samples``) and their companions; the degraded input;
    * the representation's reconstruction PSNR/SSIM of the validation slices
      (latent generators: autoencoder only, without texture);
    * the noise power spectrum of the samples against the real training and
      validation slices (:func:`fedsynth.generative.noise_spectrum.compare_noise_spectra`);
    * the classifier two-sample AUC against the training and validation
      patients, beside its real-vs-real floor;
    * the generator's training effort (optimiser steps, images seen, seconds, how it stopped).
    """
    from fedsynth.errors import DataError
    from fedsynth.generative.noise_spectrum import compare_noise_spectra
    from fedsynth.tasks.metrics import image_metrics

    train, val = store.train_images(), store.val_images()
    if len(val) == 0:
        raise DataError("the fidelity diagnostics need validation patients (the site has none)")
    train_pix, val_pix = store.pixel_mm_of("train"), store.pixel_mm_of("val")
    n = int(n_samples or len(train))
    t0 = time.perf_counter()
    samples, companions = gen.sample(n, seed=seed + 17, with_untextured=True)
    sample_seconds = time.perf_counter() - t0
    pix = np.full(n, store.typical_pixel_mm())
    sets: dict[str, tuple[np.ndarray, Any]] = {"real": (train, train_pix)}
    out: dict[str, Any] = {"generator": {"kind": gen.config.kind, "profile": gen.config.profile,
                                         "checkpoint_hash": gen.checkpoint_hash,
                                         "exact_representation": bool(gen.exact_representation)}}
    if not gen.exact_representation:
        sets["representation"] = (gen.represent(train, seed=seed), train_pix)
        rec = gen.represent(val, seed=seed, texture=False)
        m = image_metrics(rec, val)
        out["reconstruction"] = {"psnr": float(m["psnr"].mean()), "ssim": float(m["ssim"].mean())}
    sets["samples"] = (samples, pix)
    sets["companions"] = (companions, pix)
    value = task_value(sets, val, val_pix, store.val_patient_ids(), cfg, budget, seeds=seeds, seed=seed)
    if gen.exact_representation:
        value["gaps"]["representation"] = {"psnr": 0.0, "ssim": 0.0, "exact": True}
    out["task_value"] = value
    real_side, groups = store.parts("train", "val")
    def spectrum(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
        try:
            return compare_noise_spectra(a, b, seed=seed)
        except DataError as err:  # no flat in-body region to measure: the reason, not a number
            return {"skipped": str(err)}

    out["noise_spectrum"] = {"samples": spectrum(samples, real_side), "companions": spectrum(companions, real_side),
                             # the floor: the validation patients against the training patients, both real
                             "real_val_vs_train": spectrum(val, train)}
    if two_sample:
        from fedsynth.generative.two_sample import two_sample_report

        out["two_sample"] = two_sample_report(real_side, groups, samples, seed=seed)
    summary = gen.training
    out["training"] = {k: summary.get(k) for k in ("optimizer_steps", "samples_seen", "train_seconds",
                                                    "stopped", "best_epoch", "unet_epochs", "best_val_loss",
                                                    "n_images", "n_validation")}
    out["training"]["validation"] = summary.get("history", {}).get("validation", [])
    out["sampling"] = {"n": n, "seconds": round(sample_seconds, 2),
                       "images_per_second": round(n / max(sample_seconds, 1e-9), 2)}
    return out
