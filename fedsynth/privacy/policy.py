"""A site's privacy policy: the least its gate will ever do, whatever the coordinator asks.

Why the site's: the gate's promise is made to the site's patients, so it is
the site's privacy officer who sets its floor, in the site's own config
(``[privacy]`` in the site TOML). The coordinator's publish request can only
ask for *more*: the site applies the stricter of its policy and the request,
and refuses a request that asks for less, with a reason that names the field
and the two values (never data). Without a ``[privacy]`` section the default
policy below applies, never "whatever the coordinator sends".

The same comparison checks the other direction at the coordinator: a
certificate must be at least as strict as the request it answers
(:meth:`GatePolicy.from_request`).

    >>> policy = GatePolicy()                                    # the documented default
    >>> effective = policy.apply(request_gate, quota=120, max_attempts=480)   # or PolicyRefusal
    >>> policy.digest()                                          # signed into every certificate
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import Field, field_validator, model_validator

from fedsynth.config import StrictModel
from fedsynth.errors import GateError
from fedsynth.privacy.config import DetectorConfig, GateConfig, MetricName

__all__ = ["GatePolicy", "PolicyRefusal"]


class PolicyRefusal(GateError):
    """A request asks for less than the site's policy allows; nothing is generated or published.

    Its message is built from configuration values only (field names and
    numbers), so unlike other site errors it may travel back to the
    coordinator verbatim and into the study's report.
    """


#: Policy fields added later; left out of the digest while at their defaults, so the digests of policies
#: registered before they existed stay valid.
_LATER_FIELDS = ("min_rotation_deg", "min_scale_change", "require_subpixel_shifts", "copy_detector", "review")


class GatePolicy(StrictModel):
    """What every publication of a site must satisfy (``[privacy]`` in the site TOML)."""

    metrics: list[MetricName] = Field(
        default_factory=lambda: ["pixel_rmse", "ncc_robust"], min_length=1,
        description="metrics every request must include")
    min_percentile: float | None = Field(
        5.0, gt=0.0, lt=100.0,
        description="thresholds are calibrated at no lower a percentile of other-patient nearest distances; "
        "None: the policy sets absolute floors only")
    min_thresholds: dict[MetricName, float] = Field(
        default_factory=dict, description="absolute floor per metric (> 0), applied on top of calibration")
    require_companions: bool = Field(
        False, description="every candidate's untextured companion must clear the thresholds too")
    min_max_shift: int = Field(4, ge=0, le=16, description="ncc_robust must cover integer shifts of at least this")
    require_flips: bool = Field(True, description="ncc_robust must cover flips")
    min_rotation_deg: float = Field(0.0, ge=0.0, le=30.0, description="the transform grid must include rotations "
                                    "of at least -x and +x degrees (0: no requirement)")
    min_scale_change: float = Field(0.0, ge=0.0, le=0.5, description="the transform grid must include scales of "
                                    "at most 1 - x and at least 1 + x (0: no requirement)")
    require_subpixel_shifts: bool = Field(False, description="the transform grid must include half-pixel shifts")
    review: bool = Field(False, description="a person at the site approves each bundle before it leaves "
                         "(`fedsynth site-review`); in a simulation it is approved automatically and the report says so")
    max_images: int = Field(10_000, ge=1, description="most accepted images one study may ask for")
    max_candidates: int = Field(50_000, ge=1, description="most candidates one study may have the gate draw")
    copy_detector: DetectorConfig = Field(
        default_factory=DetectorConfig, description="how the site trains its copy detector (metric learned_copy; "
        "[privacy.copy_detector] in the site TOML)")

    @field_validator("min_thresholds")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        for name, value in v.items():
            if not value > 0:
                raise ValueError(f"floor for {name} must be a positive number, got {value}")
        return v

    @model_validator(mode="after")
    def _some_floor(self) -> GatePolicy:
        if self.min_percentile is None and not all(m in self.min_thresholds for m in self.metrics):
            raise ValueError("without min_percentile every required metric needs a floor in min_thresholds")
        return self

    def digest(self) -> str:
        """``sha256:<hex>`` of the policy's canonical JSON: what a certificate and the coordinator's registry name."""
        from fedsynth.privacy.signing import canonical_json

        data = self.model_dump(mode="json")
        for name in _LATER_FIELDS:  # added after policies were registered: absent while at their default
            default = type(self).model_fields[name].get_default(call_default_factory=True)
            if data[name] == (default.model_dump(mode="json") if isinstance(default, StrictModel) else default):
                data.pop(name)
        return "sha256:" + hashlib.sha256(canonical_json(data)).hexdigest()

    @classmethod
    def from_request(cls, gate: GateConfig, quota: int, max_attempts: int) -> GatePolicy:
        """The coordinator's request as a floor: what a certificate answering it must at least satisfy."""
        return cls(metrics=list(gate.metrics), min_percentile=gate.percentile if gate.mode == "calibrated" else None,
                   min_thresholds=dict(gate.thresholds), require_companions=gate.require_companions,
                   min_max_shift=gate.max_shift, require_flips=gate.flips, max_images=quota,
                   max_candidates=max_attempts, min_rotation_deg=_rotation_reach(gate),
                   min_scale_change=_scale_reach(gate), require_subpixel_shifts=gate.subpixel_shifts)

    def shortfalls(self, gate: GateConfig, quota: int, max_attempts: int) -> list[str]:
        """Every way ``gate`` (with that quota and candidate budget) asks for less than this policy; empty if none.

        Calibrated floors below the policy's floors are not a shortfall (the
        stricter floor is applied); absolute thresholds below them are.
        """
        out: list[str] = []
        missing = [m for m in self.metrics if m not in gate.metrics]
        if missing:
            out.append(f"metrics {gate.metrics} lack the required {missing}")
        if self.min_percentile is not None and gate.mode == "calibrated" and gate.percentile < self.min_percentile:
            out.append(f"calibration percentile {gate.percentile:g} is below the floor {self.min_percentile:g}")
        if gate.mode == "absolute":
            for m, floor in sorted(self.min_thresholds.items()):
                if m in gate.thresholds and gate.thresholds[m] < floor:
                    out.append(f"absolute threshold {m} {gate.thresholds[m]:g} is below the floor {floor:g}")
        if self.require_companions and not gate.require_companions:
            out.append("companions are required")
        if "ncc_robust" in gate.metrics and gate.max_shift < self.min_max_shift:
            out.append(f"ncc_robust max_shift {gate.max_shift} is below the floor {self.min_max_shift}")
        if "ncc_robust" in gate.metrics and self.require_flips and not gate.flips:
            out.append("ncc_robust must cover flips")
        if self.min_rotation_deg > 0 and _rotation_reach(gate) < self.min_rotation_deg:
            out.append(f"the transform grid's rotations reach +-{_rotation_reach(gate):g} deg, below the floor "
                       f"+-{self.min_rotation_deg:g}")
        if self.min_scale_change > 0 and _scale_reach(gate) < self.min_scale_change:
            out.append(f"the transform grid's scales reach +-{_scale_reach(gate):g}, below the floor "
                       f"+-{self.min_scale_change:g}")
        if self.require_subpixel_shifts and not gate.subpixel_shifts:
            out.append("the transform grid must include half-pixel shifts")
        if quota > self.max_images:
            out.append(f"quota {quota} exceeds the most images per study, {self.max_images}")
        if max_attempts > self.max_candidates:
            out.append(f"{max_attempts} candidates exceed the most per study, {self.max_candidates}")
        return out

    def apply(self, gate: GateConfig, quota: int, max_attempts: int) -> GateConfig:
        """The gate the site runs: the stricter of this policy and the request; :class:`PolicyRefusal` if it asks for less.

        An absolute request is run as a calibrated gate at the policy's
        percentile with the requested thresholds as floors, so its effective
        thresholds are at least both.
        """
        short = self.shortfalls(gate, quota, max_attempts)
        if short:
            raise PolicyRefusal("refused by the site's privacy policy: " + "; ".join(short))
        floors: dict[str, float] = dict(gate.thresholds)
        for m, floor in self.min_thresholds.items():
            if m in gate.metrics:
                floors[m] = max(floors.get(m, 0.0), floor)
        update: dict[str, Any] = {"thresholds": floors}
        if self.min_percentile is not None and gate.mode == "absolute":
            update.update(mode="calibrated", percentile=self.min_percentile)
        return GateConfig.model_validate({**gate.model_dump(), **update})


def _rotation_reach(gate: GateConfig) -> float:
    """The largest x such that the grid has rotations of at least -x and +x degrees (0 if it lacks a side)."""
    rots = [float(r) for r in gate.rotations_deg]
    return min(max((r for r in rots if r > 0), default=0.0), max((-r for r in rots if r < 0), default=0.0))


def _scale_reach(gate: GateConfig) -> float:
    """The largest x such that the grid has scales of at most 1 - x and at least 1 + x (0 if it lacks a side)."""
    scales = [float(v) for v in gate.scales]
    return min(max((v - 1 for v in scales if v > 1), default=0.0), max((1 - v for v in scales if v < 1), default=0.0))
