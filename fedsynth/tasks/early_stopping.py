"""Training to convergence under a maximum budget: validate every few epochs, keep the best, stop on patience.

Why one rule for every method: a comparison of training recipes is only fair
when each recipe stops by the same rule, on the same kind of evidence. Every
method of a study (the pooled network, centralised-real, each site alone,
and — round by round — FedAvg and its kin) is validated after every
``check_every`` epochs on validation patients only, keeps the weights with
the lowest validation MSE, and stops after ``patience`` checks without a
lower one or at ``max_epochs``. Where the validation happens is the
caller's business: at the site on its own validation patients, or pooled
over the sites' validation patients by federated evaluation.

    >>> best, curve = train_until_converged(model, images, cfg, seed=0, budget=Budget(max_epochs=12),
    ...                                     validate=lambda m: {"val_mse": mse_on_val(m)})
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from fedsynth.stopping import EarlyStopping
from fedsynth.tasks.config import Budget, TaskConfig
from fedsynth.tasks.training import fit_epochs, make_optimizer, optimizer_step_count

__all__ = ["Budget", "EarlyStopping", "train_until_converged", "val_psnr"]


def val_psnr(mse: float) -> float:
    """PSNR (data range 1) of a mean squared error."""
    return float(10.0 * np.log10(1.0 / max(mse, 1e-12)))


def train_until_converged(
    model: nn.Module,
    images: np.ndarray,
    cfg: TaskConfig,
    seed: int,
    budget: Budget,
    validate: Callable[[nn.Module], dict[str, float]],
    pixel_mm: float | np.ndarray | None = None,
) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Train ``model`` in chunks of ``check_every`` epochs, validating after each; returns (best state, curve).

    ``validate(model)`` returns at least ``val_mse``; anything else it
    returns (PSNR, bytes so far) is kept in the curve entry. One Adam lives
    through all chunks. The curve has one entry per validation: ``epoch``,
    ``steps`` and ``samples`` (cumulative optimiser steps and training
    patches), ``seconds`` and the validation numbers; the best entry is
    flagged ``best``.
    """
    t0 = time.perf_counter()
    opt = make_optimizer(model, cfg)
    stopper = EarlyStopping(budget.patience)
    best = {k: v.detach().clone() for k, v in model.state_dict().items()}
    curve: list[dict[str, Any]] = []
    samples = 0
    for check in range(budget.max_checks):
        res = fit_epochs(model, images, cfg, budget.check_every, seed, optimizer=opt,
                         first_epoch=check * budget.check_every, pixel_mm=pixel_mm)
        samples += budget.check_every * res["n_patches"]
        point = {"epoch": (check + 1) * budget.check_every, "steps": optimizer_step_count(opt),
                 "samples": samples, "train_loss": float(res["loss"]), **validate(model)}
        point.setdefault("val_psnr", val_psnr(point["val_mse"]))
        point["seconds"] = time.perf_counter() - t0
        if stopper.update(point["val_mse"]):
            best = {k: v.detach().clone() for k, v in model.state_dict().items()}
        curve.append(point)
        if stopper.stop:
            break
    return best, stopper.mark_best(curve)
