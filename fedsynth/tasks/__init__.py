"""Downstream tasks: low-dose CT denoising and MRI/PET super-resolution.

Degradations applied identically to real and synthetic images
(:func:`make_pairs`), networks by name (:func:`build_network`), training
(:func:`fit_epochs` for a federated round, :func:`train_network` to
convergence with checkpoint/resume) and per-image metrics
(:func:`evaluate_network`). Paired statistics live in :mod:`fedsynth.report`.

    >>> cfg = TaskConfig(task="ldct", network="rednet", epochs=5)
    >>> metrics = evaluate_network(train_network(train_images, cfg)[0], test_images, cfg, seed=1)

Names are imported on first use (:func:`fedsynth.lazy.lazy_exports`): ``fedsynth --help``
imports the command modules, which must not pull in torch/MONAI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedsynth.lazy import lazy_exports

exports = {
    "Budget": "fedsynth.tasks.config",
    "DATA_RANGE": "fedsynth.tasks.metrics",
    "NETWORKS": "fedsynth.tasks.config",
    "TaskConfig": "fedsynth.tasks.config",
    "blur_downsample": "fedsynth.tasks.sr_sim",
    "build_network": "fedsynth.tasks.networks",
    "evaluate_network": "fedsynth.tasks.evaluate",
    "evaluate_pairs": "fedsynth.tasks.evaluate",
    "fit_epochs": "fedsynth.tasks.training",
    "train_until_converged": "fedsynth.tasks.early_stopping",
    "val_psnr": "fedsynth.tasks.early_stopping",
    "hu_to_unit": "fedsynth.tasks.ct_sim",
    "image_metrics": "fedsynth.tasks.metrics",
    "kspace_truncate": "fedsynth.tasks.sr_sim",
    "load_network": "fedsynth.tasks.training",
    "load_task_config": "fedsynth.tasks.config",
    "low_dose_ct": "fedsynth.tasks.ct_sim",
    "make_pairs": "fedsynth.tasks.degrade",
    "predict": "fedsynth.tasks.training",
    "save_network": "fedsynth.tasks.training",
    "train_and_evaluate": "fedsynth.tasks.experiment",
    "train_network": "fedsynth.tasks.training",
    "unit_to_hu": "fedsynth.tasks.ct_sim",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, exports)

if TYPE_CHECKING:  # pragma: no cover
    from fedsynth.tasks.config import NETWORKS, Budget, TaskConfig, load_task_config  # noqa: F401
    from fedsynth.tasks.ct_sim import hu_to_unit, low_dose_ct, unit_to_hu  # noqa: F401
    from fedsynth.tasks.degrade import make_pairs  # noqa: F401
    from fedsynth.tasks.early_stopping import train_until_converged, val_psnr  # noqa: F401
    from fedsynth.tasks.evaluate import evaluate_network, evaluate_pairs  # noqa: F401
    from fedsynth.tasks.experiment import train_and_evaluate  # noqa: F401
    from fedsynth.tasks.metrics import DATA_RANGE, image_metrics  # noqa: F401
    from fedsynth.tasks.networks import build_network  # noqa: F401
    from fedsynth.tasks.sr_sim import blur_downsample, kspace_truncate  # noqa: F401
    from fedsynth.tasks.training import (  # noqa: F401
        fit_epochs,
        load_network,
        predict,
        save_network,
        train_network,
    )
