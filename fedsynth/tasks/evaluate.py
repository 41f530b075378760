"""Evaluate a trained network on held-out clean images, and its degraded input as the baseline.

    >>> m = evaluate_network(model, test_images, cfg, seed=1)
    >>> m["psnr"].mean(), m["input_psnr"].mean()
"""

from __future__ import annotations

import numpy as np
from torch import nn

from fedsynth.tasks.config import TaskConfig
from fedsynth.tasks.degrade import make_pairs
from fedsynth.tasks.metrics import image_metrics
from fedsynth.tasks.training import predict

__all__ = ["evaluate_network", "evaluate_pairs"]


def evaluate_pairs(
    model: nn.Module, inputs: np.ndarray, targets: np.ndarray, cfg: TaskConfig
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Metrics of ``model`` on given pairs, plus ``input_*`` metrics; returns (metrics, outputs)."""
    hu = cfg.hu_window if cfg.task == "ldct" else None
    outputs = predict(model, inputs, cfg)
    metrics = image_metrics(outputs, targets, hu_window=hu)
    for key, val in image_metrics(inputs, targets, hu_window=hu).items():
        metrics[f"input_{key}"] = val
    return metrics, outputs


def evaluate_network(
    model: nn.Module, test_images: np.ndarray, cfg: TaskConfig, seed: int,
    pixel_mm: float | np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-image ``psnr``, ``ssim``, ``rmse`` (data_range 1.0), ``rmse_hu`` for CT, and ``input_*`` twins.

    The test images are degraded with ``seed``; evaluating two models with the
    same seed scores them on identical inputs (a paired comparison).
    ``pixel_mm``: each image's pixel size (low-dose CT, see :func:`make_pairs`).
    """
    inputs, targets = make_pairs(test_images, cfg, seed, pixel_mm)
    return evaluate_pairs(model, inputs, targets, cfg)[0]
