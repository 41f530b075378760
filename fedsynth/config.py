"""Configuration models: the single source of truth for every user input.

Every knob a site operator, coordinator operator or researcher can turn is a
field of a pydantic model here (or in the model of the stage that owns it),
loaded from TOML or built from CLI flags. Validation errors are turned into
one line that names the file, the key and what was expected, so a typo in a
hospital's config never surfaces as a traceback.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fedsynth.errors import ConfigError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_VOXELS",
    "IngestSettings",
    "Modality",
    "SiteConfig",
    "StrictModel",
    "format_validation_error",
    "load_toml",
    "validate",
]

Modality = Literal["ct", "mri", "pet"]
M = TypeVar("M", bound=BaseModel)

#: Largest volume ingest reads, in voxels (all frames): ~10 CTs of 512 x 512 x 400, 4 GB as float32.
DEFAULT_MAX_VOXELS = 1_000_000_000
#: Largest voxel data ingest reads, in bytes as stored (voxels x bytes per voxel of the header's dtype).
DEFAULT_MAX_BYTES = 8 * 2**30


class StrictModel(BaseModel):
    """Base for all config models: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class IngestSettings(StrictModel):
    """How volumes become normalised 2-D slices (see :mod:`fedsynth.data`)."""

    size: int = Field(128, ge=16, le=1024, description="output slice edge length in pixels")
    hu_window: tuple[float, float] = Field(
        (-1000.0, 1000.0), description="CT: HU mapped to 0 and 1 (values outside are clipped)"
    )
    percentiles: tuple[float, float] = Field(
        (0.5, 99.5), description="MRI/PET: robust percentiles mapped to 0 and 1"
    )
    body_fraction: float = Field(
        0.05, ge=0.0, le=1.0, description="skip slices whose body (foreground) covers less than this"
    )
    frame: int | None = Field(
        None, ge=0, description="for 4-D volumes: which frame to use (4-D is an error without it)"
    )
    # The two bounds below only refuse input (checked on the header, before any voxel is read),
    # they never change a slice, so they are not part of the slice store's key.
    max_voxels: int = Field(
        DEFAULT_MAX_VOXELS, ge=1,
        description="refuse a volume whose header claims more voxels than this (all frames counted)",
    )
    max_bytes: int = Field(
        DEFAULT_MAX_BYTES, ge=1,
        description="refuse a volume whose voxel data, as stored (voxels x bytes per voxel), exceeds this",
    )

    @model_validator(mode="after")
    def _ordered(self) -> IngestSettings:
        if not self.hu_window[0] < self.hu_window[1]:
            raise ValueError("hu_window must be (low, high) with low < high")
        lo, hi = self.percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise ValueError("percentiles must be (low, high) with 0 <= low < high <= 100")
        return self


class SiteConfig(StrictModel):
    """One hospital site: where its scans are and how they are split."""

    id: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="site identifier")
    modality: Modality
    data_dir: Path = Field(..., description="directory of NIfTI volumes, one per patient")
    workdir: Path = Field(..., description="where the site keeps caches, checkpoints and keys")
    image_size: int = Field(128, ge=16, le=1024)
    train_fraction: float = Field(0.75, gt=0.0, lt=1.0, description="share of patients for training")
    val_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="share of patients for validation (every "
                                "choice a study makes; 0 = none, then nothing can be tuned or early-stopped)")
    seed: int = Field(0, ge=0)
    fold: int = Field(0, ge=0, description="re-split k: the seeded patient order rotated so that fold k's test "
                      "patients are disjoint from every other fold's (0 = the usual split)")
    manifest: Path | None = Field(None, description="optional CSV: file,patient_id")
    ingest: IngestSettings = Field(default_factory=IngestSettings)


def format_validation_error(err: ValidationError, source: str) -> str:
    """Render the first validation problem as ``source: key 'a.b': message``."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ())) or "<root>"
    msg = first.get("msg", "invalid value")
    if first.get("type") == "extra_forbidden":
        msg = "unknown key"
    elif first.get("type") == "missing":
        msg = "required key is missing"
    extra = f" (and {len(err.errors()) - 1} more problem(s))" if len(err.errors()) > 1 else ""
    inp = first.get("input")
    got = ""
    if first.get("type") not in {"missing", "extra_forbidden"} and not isinstance(inp, dict):
        got = f", got {inp!r}"
    return f"{source}: key '{loc}': {msg}{got}{extra}"


def validate(model: type[M], data: dict, source: str) -> M:
    """Validate ``data`` against ``model``; raise :class:`ConfigError` with one line on failure."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def load_toml(path: str | Path, model: type[M], table: str | None = None) -> M:
    """Load ``path`` (optionally one top-level ``table`` of it) into ``model``.

    Relative paths inside the file are the caller's business; the file's own
    location is not assumed to be the working directory.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from None
    if table is not None:
        if table not in raw:
            raise ConfigError(f"{path}: key '{table}': required table is missing")
        raw = raw[table]
    return validate(model, raw, str(path))
