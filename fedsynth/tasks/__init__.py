"""Downstream tasks: low-dose CT denoising and MRI/PET super-resolution.

Degradations applied identically to real and synthetic images
(:func:`make_pairs`), networks by name (:func:`build_network`), training
(:func:`fit_epochs` for a federated round, :func:`train_network` to
convergence with checkpoint/resume) and per-image metrics
(:func:`evaluate_network`). Heavy imports (MONAI) happen inside functions.

    >>> cfg = TaskConfig(task="ldct", network="rednet", epochs=5)
    >>> model, history = train_network(train_images, cfg)
    >>> metrics = evaluate_network(model, test_images, cfg, seed=1)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Lazy exports: ``fedsynth --help`` imports the command modules, which must not pull in torch/MONAI.
_EXPORTS = {
    "DATA_RANGE": "fedsynth.tasks.metrics",
    "NETWORKS": "fedsynth.tasks.config",
    "TaskConfig": "fedsynth.tasks.config",
    "blur_downsample": "fedsynth.tasks.sr_sim",
    "build_network": "fedsynth.tasks.networks",
    "evaluate_network": "fedsynth.tasks.evaluate",
    "evaluate_pairs": "fedsynth.tasks.evaluate",
    "fit_epochs": "fedsynth.tasks.training",
    "hu_to_unit": "fedsynth.tasks.ct_sim",
    "image_metrics": "fedsynth.tasks.metrics",
    "kspace_truncate": "fedsynth.tasks.sr_sim",
    "load_network": "fedsynth.tasks.training",
    "load_task_config": "fedsynth.tasks.config",
    "low_dose_ct": "fedsynth.tasks.ct_sim",
    "make_pairs": "fedsynth.tasks.degrade",
    "paired_comparison": "fedsynth.tasks.stats",
    "predict": "fedsynth.tasks.training",
    "save_network": "fedsynth.tasks.training",
    "train_and_evaluate": "fedsynth.tasks.experiment",
    "train_network": "fedsynth.tasks.training",
    "unit_to_hu": "fedsynth.tasks.ct_sim",
}

if TYPE_CHECKING:  # pragma: no cover
    from fedsynth.tasks.config import NETWORKS, TaskConfig, load_task_config  # noqa: F401
    from fedsynth.tasks.ct_sim import hu_to_unit, low_dose_ct, unit_to_hu  # noqa: F401
    from fedsynth.tasks.degrade import make_pairs  # noqa: F401
    from fedsynth.tasks.evaluate import evaluate_network, evaluate_pairs  # noqa: F401
    from fedsynth.tasks.experiment import train_and_evaluate  # noqa: F401
    from fedsynth.tasks.metrics import DATA_RANGE, image_metrics  # noqa: F401
    from fedsynth.tasks.networks import build_network  # noqa: F401
    from fedsynth.tasks.sr_sim import blur_downsample, kspace_truncate  # noqa: F401
    from fedsynth.tasks.stats import paired_comparison  # noqa: F401
    from fedsynth.tasks.training import (  # noqa: F401
        fit_epochs,
        load_network,
        predict,
        save_network,
        train_network,
    )


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fedsynth.tasks' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
