"""What a site (or the stand-alone ``fedsynth gate``) may configure about the gate."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fedsynth.config import StrictModel

__all__ = ["METRICS", "DetectorConfig", "GateConfig", "MetricName"]

MetricName = Literal["pixel_rmse", "ncc_robust", "learned_copy", "random_vgg_rmse"]
#: Every metric the gate knows, in the order they are reported.
METRICS: tuple[str, ...] = ("pixel_rmse", "ncc_robust", "learned_copy", "random_vgg_rmse")


class GateConfig(StrictModel):
    """Metrics, thresholds and resource bounds of the privacy gate.

    A candidate is published only if, for *every* configured metric, its
    distance to the nearest real training image of the site is at least the
    metric's threshold. Thresholds are either given (``mode = "absolute"``)
    or calibrated from the site's own data (``mode = "calibrated"``): the
    ``percentile``-th percentile of the distances between each real slice and
    the nearest slice of a *different* patient.
    """

    metrics: list[MetricName] = Field(default_factory=lambda: ["pixel_rmse", "ncc_robust"], min_length=1)
    mode: Literal["calibrated", "absolute"] = "calibrated"
    percentile: float = Field(default=5.0, gt=0.0, lt=100.0,
                              description="calibrated mode: percentile of other-patient nearest distances")
    thresholds: dict[MetricName, float] = Field(
        default_factory=dict,
        description="absolute mode: threshold per metric; calibrated mode: optional floor per metric")
    max_shift: int = Field(default=4, ge=0, le=16, description="ncc_robust: largest integer shift, pixels")
    flips: bool = Field(default=True, description="ncc_robust: also try horizontal/vertical flips")
    rotations_deg: list[float] = Field(
        default_factory=list, description="every metric: also compare against each reference rotated by these "
        "angles (degrees, |a| <= 30; the transform grid of fedsynth.privacy.transforms)")
    scales: list[float] = Field(default_factory=list, description="every metric: ... and scaled by these factors "
                                "(0.5 to 2)")
    subpixel_shifts: bool = Field(default=False, description="every metric: ... and shifted by half a pixel "
                                  "(with ncc_robust's integer shifts: a half-pixel grid of shifts)")
    search: Literal["pruned", "flat"] = Field(
        default="pruned",
        description="exact nearest-neighbour strategy: 'pruned' (provable bounds, then exact re-check of the pairs "
                    "they cannot rule out) or 'flat' (exhaustive faiss search); same answer, different speed")
    require_companions: bool = Field(
        default=False,
        description="every candidate must come with a companion image that also has to clear every threshold "
                    "(the site generator's companion: the same sample before its noise texture), so texture "
                    "cannot lift a near-copy of a patient's anatomy over a threshold; a source without "
                    "companions then fails closed")
    image_size: int | None = Field(default=None, ge=8, le=2048,
                                   description="resize candidates and references to this size; None: sizes must match")
    memory_mb: int = Field(default=256, ge=16, description="bound on the search's working memory per batch")
    reference_shard: int = Field(default=16384, ge=64, description="references searched per shard (streaming)")
    calibration_max_queries: int = Field(default=2000, ge=10,
                                         description="real slices used as calibration queries (seeded subsample)")
    seed: int = 0

    @model_validator(mode="after")
    def _thresholds_cover_metrics(self) -> GateConfig:
        for name, value in self.thresholds.items():
            if not value > 0:  # also refuses NaN; a zero threshold would certify exact copies
                raise ValueError(f"threshold for {name} must be a positive number, got {value}")
        if self.mode == "absolute":
            missing = [m for m in self.metrics if m not in self.thresholds]
            if missing:
                raise ValueError(f"absolute mode needs a threshold for {', '.join(missing)}")
        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError("metrics are listed more than once")
        if any(not abs(a) <= 30 for a in self.rotations_deg):
            raise ValueError("rotations_deg must lie within +-30 degrees")
        if any(not 0.5 <= s <= 2.0 for s in self.scales):
            raise ValueError("scales must lie within 0.5 and 2")
        return self


class DetectorConfig(StrictModel):
    """How the site's copy detector is built and trained; part of its fingerprint."""

    embed_dim: int = Field(64, ge=8, le=1024)
    channels: tuple[int, ...] = Field((16, 32, 64, 64), min_length=2, max_length=6)
    steps: int = Field(300, ge=1, le=100_000, description="optimiser steps")
    batch_size: int = Field(64, ge=4, le=1024, description="slices per step (two edits each)")
    lr: float = Field(2e-3, gt=0.0, le=1.0)
    temperature: float = Field(0.1, gt=0.0, le=10.0, description="NT-Xent temperature")
    neighbours: int = Field(1, ge=0, le=64, description="slices of the same patient at most this far apart are "
                            "not negatives of each other")
    anchor_strength: float = Field(0.5, ge=0.0, le=1.0, description="edit strength of the first view (the "
                                   "second is always full strength); 0: the slice itself, as references are")
    # -- the threat model's edits (training augmentations) -----------------------------------
    max_rotation_deg: float = Field(10.0, ge=0.0, le=45.0)
    max_zoom: float = Field(0.1, ge=0.0, le=0.5, description="zoom in or out by up to this fraction")
    max_shift_px: float = Field(3.0, ge=0.0, le=16.0)
    elastic_px: float = Field(1.5, ge=0.0, le=8.0, description="SD of the elastic warp's control points, pixels")
    max_blur_px: float = Field(1.2, ge=0.0, le=4.0, description="largest Gaussian blur sigma, pixels")
    max_noise: float = Field(0.03, ge=0.0, le=0.5, description="largest Gaussian noise SD, [0, 1] units")
    gamma: tuple[float, float] = Field((0.7, 1.4), description="range of the gamma curve")
    seed: int = Field(0, ge=0)
