"""Per-modality intensity normalisation to [0, 1].

CT intensities are physical (HU), so a fixed window keeps them comparable
across sites and lets the low-dose simulator map [0, 1] back to HU. MRI and
PET have arbitrary scanner units, so each volume is scaled by its own robust
percentiles; outliers (a hot vessel, a coil artefact) don't set the scale.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedsynth.config import IngestSettings, Modality
from fedsynth.errors import DataError

__all__ = ["hu_to_window", "normalise_volume", "window_to_hu"]


def hu_to_window(hu: np.ndarray, window: tuple[float, float] = (-1000.0, 1000.0)) -> np.ndarray:
    """Map HU to float32 [0, 1] through ``window``, clipped: what an ingested CT slice holds.

    Not :func:`fedsynth.tasks.ct_sim.hu_to_unit`, the unclipped float64 map the
    low-dose simulator needs to carry noise beyond the window.
    """
    lo, hi = window
    return np.clip((hu - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def window_to_hu(x: np.ndarray, window: tuple[float, float] = (-1000.0, 1000.0)) -> np.ndarray:
    """Inverse of :func:`hu_to_window` inside the window (float32)."""
    lo, hi = window
    return (np.asarray(x, dtype=np.float32) * (hi - lo) + lo).astype(np.float32)


def normalise_volume(
    data: np.ndarray, modality: Modality, settings: IngestSettings, source: Path | str = "<array>"
) -> np.ndarray:
    """Return ``data`` scaled to float32 in [0, 1] by the modality's rule."""
    if modality == "ct":
        return hu_to_window(data, settings.hu_window)
    lo_p, hi_p = settings.percentiles
    lo, hi = np.percentile(data, [lo_p, hi_p])
    if not hi > lo:
        raise DataError(f"{source}: constant intensities, cannot normalise (p{lo_p}=p{hi_p}={lo:g})")
    return np.clip((data - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
