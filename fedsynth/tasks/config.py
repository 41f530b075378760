"""Configuration of a downstream task: degradation, network and training knobs.

One :class:`TaskConfig` describes everything needed to turn a stack of clean
``[0, 1]`` images into (degraded input, clean target) pairs, build the network
and train it. It serialises to JSON and is stored in every checkpoint, so a
checkpoint can be loaded and checked without the original command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from fedsynth.config import StrictModel, load_toml, validate

__all__ = ["DEFAULT_NETWORK", "NETWORKS", "Budget", "TaskConfig", "load_task_config"]

#: Networks selectable by name (see :func:`fedsynth.tasks.build_network`).
NETWORKS = ("rednet", "srcnn", "unet", "edsr")
#: Default network per task (paper parity: RED-CNN for low-dose CT, SRCNN for SR).
DEFAULT_NETWORK = {"ldct": "rednet", "sr": "srcnn", "lcpet": "rednet"}


class TaskConfig(StrictModel):
    """A downstream task (low-dose CT or low-count PET denoising, MRI/PET super-resolution) and its training."""

    task: Literal["ldct", "sr", "lcpet"] = Field(
        ..., description="ldct: low-dose CT denoising; sr: super-resolution; lcpet: low-count PET denoising")
    network: Literal["rednet", "srcnn", "unet", "edsr"] = Field(
        "rednet", description="network name; defaults to rednet for ldct and srcnn for sr"
    )
    channels: int | None = Field(
        None,
        ge=1,
        le=512,
        description="network width (rednet: feature maps per layer, 96 in the paper, default 16 on CPU; "
        "unet: first-level features, default 16; edsr: features, default 32; srcnn: fixed 64/32 unless set)",
    )
    n_blocks: int = Field(8, ge=1, le=64, description="edsr: number of residual blocks")
    # -- training ---------------------------------------------------------------------------
    patch_size: int = Field(32, ge=8, le=1024, description="training patch edge in pixels")
    patches_per_image: int = Field(4, ge=1, le=1024, description="random patches drawn per image and epoch")
    batch_size: int = Field(16, ge=1, le=4096)
    lr: float = Field(1e-3, gt=0.0, le=1.0, description="Adam learning rate")
    epochs: int = Field(10, ge=1, le=100_000, description="maximum epochs (frugal default for 2 CPU cores)")
    early_stopping_patience: int = Field(
        5, ge=1, description="stop after this many epochs without a lower validation loss"
    )
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of training images held out for validation")
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available")
    # -- low-dose CT simulation -------------------------------------------------------------
    dose_fraction: float = Field(0.25, gt=0.0, le=1.0, description="low dose as a fraction of full dose")
    photons: float = Field(1e5, gt=0.0, description="full-dose incident photons per ray (I0)")
    electronic_noise: float = Field(
        0.0, ge=0.0, description="std of additive Gaussian electronic noise, in photon counts per ray"
    )
    pixel_size_mm: float | None = Field(
        None, gt=0.0, description="override of the pixel edge in mm (sets the attenuation path length); "
        "default: each image's own, from its volume's voxel spacing")
    mu_water: float = Field(0.0192, gt=0.0, description="linear attenuation of water per mm (~70 keV)")
    hu_window: tuple[float, float] = Field(
        (-1000.0, 1000.0), description="HU mapped to 0 and 1 by ingestion (inverted here)"
    )
    geometry: Literal["parallel", "fan"] = Field(
        "parallel", description="parallel: parallel beam over 180 degrees (fast); fan: fan beam with a flat "
        "detector over 360 degrees (the clinical geometry, ~18x slower)")
    n_angles: int | None = Field(
        None, ge=8, le=4096, description="projection views; default ceil(pi/2 * size) over 180 degrees for "
        "parallel, 1152 over 360 degrees for fan")
    source_distance_mm: float = Field(595.0, gt=0.0, description="fan: source to isocentre in mm")
    projector: Literal["torch", "skimage"] = Field(
        "torch", description="torch: batched grid-sample projector (fast); skimage: radon/iradon (reference, "
        "parallel only)"
    )
    # -- low-count PET simulation ------------------------------------------------------------
    count_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="lcpet: the low-count scan's share of "
                                  "the full scan's coincidences")
    pet_counts: float = Field(2.5e5, gt=0.0, description="lcpet: coincidences per slice of the full-count scan")
    pet_postfilter_px: float = Field(1.0, ge=0.0, description="lcpet: Gaussian post-filter SD in pixels")
    # -- super-resolution degradation --------------------------------------------------------
    sr_factor: int = Field(2, ge=2, le=8, description="resolution reduction factor (2 or 4 in the paper)")
    sr_mode: Literal["kspace", "blur"] = Field(
        "kspace", description="kspace: central k-space truncation; blur: Gaussian blur + downsample"
    )
    blur_sigma: float | None = Field(
        None, gt=0.0, description="blur mode: Gaussian sigma in HR pixels; default (factor - 1) / 2 + 0.5"
    )

    @model_validator(mode="before")
    @classmethod
    def _default_network(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("network") is None and data.get("task") in DEFAULT_NETWORK:
            data = {**data, "network": DEFAULT_NETWORK[data["task"]]}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> TaskConfig:
        if not self.hu_window[0] < self.hu_window[1]:
            raise ValueError("hu_window must be (low, high) with low < high")
        if self.geometry == "fan" and self.projector != "torch":
            raise ValueError("projector 'skimage' is parallel-beam only; use projector = 'torch' with geometry 'fan'")
        if self.patch_size % self.sr_factor and self.task == "sr":
            raise ValueError(f"patch_size {self.patch_size} must be a multiple of sr_factor {self.sr_factor}")
        return self

    def data_fingerprint_fields(self) -> dict[str, Any]:
        """The fields that change what a checkpoint means (everything but run-length knobs)."""
        skip = {"epochs", "early_stopping_patience", "device"}
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in skip}


def load_task_config(source: dict[str, Any] | str | Path | TaskConfig, **overrides: Any) -> TaskConfig:
    """A validated :class:`TaskConfig` from a dict, a TOML file (its ``[task]`` table, or the whole
    file when it has none) or a config, with ``overrides`` (``None`` values ignored) applied.

    Raises :class:`~fedsynth.errors.ConfigError` with one line naming the key on any problem.
    """
    extra = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(source, TaskConfig):
        data, where = source.model_dump(), "task config"
    elif isinstance(source, dict):
        data, where = dict(source), "task config"
    else:
        import tomllib

        path = Path(source)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            raw = None
        table = "task" if isinstance(raw, dict) and isinstance(raw.get("task"), dict) else None
        data = load_toml(path, _Loose, table).model_dump()
        where = str(path)
    return validate(TaskConfig, {**data, **extra}, where)


class _Loose(StrictModel):
    """Any TOML table, checked properly by :class:`TaskConfig` once overrides are merged."""

    model_config = {"extra": "allow"}


class Budget(StrictModel):
    """The maximum budget and the stopping rule every method shares (:mod:`fedsynth.tasks.early_stopping`)."""

    model_config = {"extra": "forbid", "frozen": True}
    max_epochs: int = Field(12, ge=1, description="most passes over the method's training data")
    check_every: int = Field(2, ge=1, description="epochs between validations (a FedAvg round's local epochs)")
    patience: int = Field(2, ge=1, description="validations without a lower validation MSE before stopping")

    @model_validator(mode="after")
    def _divisible(self) -> Budget:
        if self.max_epochs % self.check_every:
            raise ValueError("max_epochs must be a multiple of check_every")
        return self

    @property
    def max_checks(self) -> int:
        """Validations (FedAvg rounds) at most."""
        return self.max_epochs // self.check_every
