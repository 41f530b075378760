"""(degraded input, clean target) pairs for a task, the same for real and synthetic images.

The one entry point :func:`make_pairs` is what training, evaluation and the
federation all call, so a network trained on synthetic images and one trained
on real images see inputs produced by the same code with the same settings.

Low-dose CT needs each image's pixel size (``pixel_mm``, from the slice
store, or the bundle's certificate for synthetic images): the physics depends
on path lengths in mm, so there is no silent default. Degraded stacks are
remembered (a few, up to :data:`CACHE_BYTES`): a training validated in chunks
or a site trained round after round asks for the same pairs again, and a
fan-beam scan costs ~90 ms per 64-pixel image.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np

from fedsynth.devices import resolve_device
from fedsynth.errors import DataError
from fedsynth.tasks.config import TaskConfig
from fedsynth.tasks.ct_sim import low_dose_ct
from fedsynth.tasks.pet_sim import low_count_pet
from fedsynth.tasks.sr_sim import blur_downsample, kspace_truncate

__all__ = ["CACHE_BYTES", "check_images", "degrade", "make_pairs", "pixel_sizes"]

#: Most bytes of degraded stacks kept for reuse.
CACHE_BYTES = 256 << 20
_cache: OrderedDict[str, np.ndarray] = OrderedDict()
_cache_lock = threading.Lock()


def check_images(images: np.ndarray, what: str = "images") -> np.ndarray:
    """Validate an (N, H, W) stack in [0, 1]; return it as float32 (raises :class:`DataError`)."""
    arr = np.asarray(images)
    if arr.ndim != 3 or arr.shape[0] == 0:
        raise DataError(f"{what}: expected a non-empty (N, H, W) stack, got shape {arr.shape}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise DataError(f"{what}: contains NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-4 or hi > 1 + 1e-4:
        raise DataError(f"{what}: values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]")
    return arr


def pixel_sizes(n: int, cfg: TaskConfig, pixel_mm: float | np.ndarray | None) -> np.ndarray:
    """Pixel edge (mm) of each of ``n`` images: the config's override, else ``pixel_mm``; DataError if neither."""
    if cfg.pixel_size_mm is not None:
        return np.full(n, float(cfg.pixel_size_mm))
    if pixel_mm is None:
        raise DataError("low-dose CT needs each image's pixel size in mm (from its volume's voxel spacing); "
                        "none was given and the task sets no pixel_size_mm")
    pix = np.asarray(pixel_mm, dtype=np.float64)
    if pix.ndim == 0:
        pix = np.full(n, float(pix))
    if pix.shape != (n,):
        raise DataError(f"{pix.size} pixel sizes for {n} images")
    if not (np.isfinite(pix).all() and (pix > 0).all()):
        raise DataError("pixel sizes must be positive numbers of mm")
    return pix


def _key(images: np.ndarray, cfg: TaskConfig, seed: int, pix: np.ndarray | None) -> str:
    h = hashlib.sha256(cfg.model_dump_json(exclude={"epochs", "early_stopping_patience"}).encode())
    h.update(f"{seed}\0{images.shape}".encode())
    h.update(np.ascontiguousarray(images).data)
    if pix is not None:
        h.update(pix.tobytes())
    return h.hexdigest()


def _remember(key: str, out: np.ndarray) -> None:
    if out.nbytes > CACHE_BYTES:
        return
    with _cache_lock:
        _cache[key] = out
        while sum(a.nbytes for a in _cache.values()) > CACHE_BYTES:
            _cache.popitem(last=False)


def degrade(images: np.ndarray, cfg: TaskConfig, seed: int, pixel_mm: float | np.ndarray | None = None) -> np.ndarray:
    """The degraded version of each clean image (same shape, float32, clipped to [0, 1], read-only).

    ``pixel_mm``: pixel edge in mm, per image or one for all; needed for
    low-dose CT unless the config overrides it.
    """
    images = check_images(images)
    pix = pixel_sizes(len(images), cfg, pixel_mm) if cfg.task == "ldct" else None
    key = _key(images, cfg, seed, pix)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    out = _degrade(images, cfg, seed, pix)
    out.setflags(write=False)
    _remember(key, out)
    return out


def _degrade(images: np.ndarray, cfg: TaskConfig, seed: int, pix: np.ndarray | None) -> np.ndarray:
    if cfg.task == "ldct":
        if images.shape[1] != images.shape[2]:
            raise DataError(f"low-dose CT needs square slices, got {images.shape[1]}x{images.shape[2]}")
        try:
            return low_dose_ct(
                images,
                pixel_mm=pix,
                dose_fraction=cfg.dose_fraction,
                photons=cfg.photons,
                electronic_noise=cfg.electronic_noise,
                mu_water=cfg.mu_water,
                hu_window=cfg.hu_window,
                geometry=cfg.geometry,
                n_angles=cfg.n_angles,
                source_mm=cfg.source_distance_mm,
                projector=cfg.projector,
                seed=seed,
                device=resolve_device(cfg.device).type,
            )
        except ValueError as err:  # e.g. a field of view too large for the fan's source distance
            raise DataError(f"low-dose CT: {err}") from None
    if cfg.task == "lcpet":
        return low_count_pet(images, count_fraction=cfg.count_fraction, counts=cfg.pet_counts, seed=seed,
                             postfilter_px=cfg.pet_postfilter_px)
    h, w = images.shape[1:]
    if h % cfg.sr_factor or w % cfg.sr_factor:
        raise DataError(f"image size {h}x{w} is not a multiple of sr_factor {cfg.sr_factor}")
    if cfg.sr_mode == "kspace":
        low = kspace_truncate(images, cfg.sr_factor)
    else:
        low = blur_downsample(images, cfg.sr_factor, cfg.blur_sigma)
    return np.clip(low, 0.0, 1.0)


def make_pairs(
    images: np.ndarray, cfg: TaskConfig, seed: int, pixel_mm: float | np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) for ``images`` (N, H, W) in [0, 1]: degraded inputs and the clean images.

    Both are float32 (N, H, W) on the same grid (for SR the input is the
    low-resolution image brought back to H x W). Deterministic given ``seed``.
    ``pixel_mm`` as in :func:`degrade`.
    """
    targets = check_images(images)
    return degrade(targets, cfg, seed, pixel_mm), targets
