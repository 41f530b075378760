"""The gate's certificate as a typed contract: built by the gate, checked by signing, read by the pool.

Why a model: the certificate crosses the site boundary, is signed, stored in
the pool's manifest and summarised in the report. One definition of its
fields (and of the acceptance rule) keeps the four places from drifting
apart; a certificate that does not fit the model is malformed, whoever made it.

The signed bytes are :func:`fedsynth.privacy.canonical_json` (RFC 8785) of
:meth:`Certificate.body`: exactly the fields the gate set (optional fields
it left out stay out), so parsing a received body and dumping it again gives
the same bytes.

    >>> cert = Certificate.model_validate(signed["certificate"])
    >>> cert.thresholds(), cert.summary.n_published
    >>> cert.check_consistency()          # GateError if flags contradict distances
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedsynth.config import format_validation_error
from fedsynth.errors import GateError
from fedsynth.privacy.config import GateConfig

__all__ = [
    "FORMAT",
    "AcceptanceMargin",
    "Binding",
    "CandidateRecord",
    "Certificate",
    "Companions",
    "GeneratorDiagnostics",
    "MetricThreshold",
    "ReferenceSet",
    "ReleaseReview",
    "SignedCertificate",
    "timestamp",
    "Summary",
    "parse_certificate",
]

#: The certificate format this version writes and reads.
FORMAT = "fedsynth-gate-certificate/1"


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReferenceSet(_Part):
    """What the candidates were checked against: a hash of the site's training slices, never the slices."""

    fingerprint: str
    n_images: int = Field(..., ge=0)
    n_patients: int | None
    image_shape: list[int]
    n_searched: int | None = Field(None, ge=0, description="references searched: the slices and their "
                                   "transform-grid variants (GateConfig.rotations_deg, scales, subpixel_shifts)")


class MetricThreshold(_Part):
    """One metric's definition and threshold (with its calibration summary when calibrated)."""

    definition: str
    mode: Literal["calibrated", "absolute"]
    threshold: float
    calibration: dict[str, Any] | None = None
    floor: float | None = None
    detector: dict[str, Any] | None = None  # learned_copy: the copy detector's fingerprint, config and training


class AcceptanceMargin(_Part):
    """The rounding margin of the accept rule: ``d >= threshold * (1 + relative) + absolute``."""

    relative: float = 0.0
    absolute: float = 0.0

    def bar(self, threshold: float) -> float:
        """The distance a candidate must reach to clear ``threshold`` (the one accept rule)."""
        return float(threshold) * (1.0 + self.relative) + self.absolute


class Companions(_Part):
    """Whether every candidate had to come with a companion (its untextured sample) that also clears."""

    required: bool = False
    checked: bool = False


def timestamp() -> str:
    """Now, as certificates state times: UTC, whole seconds, ISO 8601 (``created``, a review's ``decided``)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


class ReleaseReview(_Part):
    """A person's release decision at the site (``[privacy] review = true``): who, when, what was withheld.

    The gate accepted every image it certifies; the reviewer may withhold
    some of them, which are then not published (``published`` lists the
    released ones only). ``automatic``: a simulation, where nobody reviews.
    """

    reviewer: str = Field(..., min_length=1, max_length=200)
    decided: str
    automatic: bool = False
    withheld: list[str] = Field(default_factory=list)


class CandidateRecord(_Part):
    """One candidate: its certified nearest distance per metric and the decision."""

    index: int = Field(..., ge=0)
    accepted: bool
    nn_distance: dict[str, float]
    nn_distance_companion: dict[str, float] | None = None
    digest: str | None = None
    companion_digest: str | None = None  # accepted with a companion: the companion's digest (it may be published)


class Binding(_Part):
    """Who published this, into which study, answering which request, under which policy, with which key.

    Inside the signed body, so none of it can be changed or stripped without
    breaking the signature; the coordinator checks every field.
    """

    site_id: str
    study_id: str
    nonce: str
    policy_digest: str
    key_id: str
    algorithm: Literal["ed25519"] = "ed25519"


class Summary(_Part):
    """Counts of one gate run."""

    n_candidates: int = Field(..., ge=0)
    n_published: int = Field(..., ge=0)
    n_rejected: int = Field(..., ge=0)
    acceptance_rate: float
    quota: int
    quota_met: bool
    min_nearest_published: dict[str, float | None]


class GeneratorDiagnostics(_Part):
    """What the site measured of the generator behind the bundle: numbers only, no image leaves with them.

    ``noise_power_ratio``: per radial band, the published images' flat-region
    noise power over the site's real training and validation slices'
    (``fedsynth.generative.noise_spectrum``), with 95 % bootstrap CIs;
    ``noise_within``: every band within 1 +- ``noise_tolerance``; all None,
    with ``noise_skipped`` saying why, when the images have no flat in-body
    region to measure. The training effort comes from the generator's own summary.
    """

    kind: Literal["pixel", "latent"]
    optimizer_steps: int = Field(..., ge=0, description="autoencoder + diffusion optimiser steps")
    images_seen: int = Field(..., ge=0, description="training images (or crops) through both networks")
    train_seconds: float = Field(..., ge=0.0)
    stopped: Literal["validation", "max_epochs"]
    best_epoch: int = Field(..., ge=0, description="UNet epoch of the weights that sample")
    noise_bands: list[tuple[float, float]] | None = None
    noise_power_ratio: list[float] | None = None
    noise_power_ci95: list[tuple[float, float]] | None = None
    noise_tolerance: float | None = Field(None, gt=0.0)
    noise_within: bool | None = None
    noise_skipped: str | None = Field(None, description="why the spectrum could not be measured (no flat region)")


class Certificate(_Part):
    """The body a site signs: what was checked, against what, with which thresholds, and the outcome."""

    format: Literal["fedsynth-gate-certificate/1"] = FORMAT
    created: str
    fedsynth_version: str
    generator_hash: str | None
    reference: ReferenceSet
    metrics: dict[str, MetricThreshold]
    # absent from certificates written before the margin and companions existed
    acceptance_margin: AcceptanceMargin = Field(default_factory=AcceptanceMargin)
    companions: Companions = Field(default_factory=Companions)
    config: GateConfig
    images: list[CandidateRecord]
    published: list[str]
    summary: Summary
    binding: Binding | None = None  # absent from stand-alone `fedsynth gate` certificates
    memorisation: dict[str, Any] | None = None  # the site's audit of what it publishes (privacy.audit.memorisation)
    quality: dict[str, Any] | None = None  # the site's two-sample test of what it publishes (generative.two_sample)
    generator: GeneratorDiagnostics | None = None  # the site's measurements of the generator behind the bundle
    # pixel edge (mm) the published images stand for: the median of the generator's training slices
    pixel_mm: float | None = Field(None, gt=0.0)
    review: ReleaseReview | None = None  # the site's release review, when its policy requires one

    def body(self) -> dict[str, Any]:
        """The JSON object that is signed: every field the maker set, nothing it left out."""
        return self.model_dump(mode="json", exclude_unset=True)

    def thresholds(self) -> dict[str, float]:
        """Threshold per metric."""
        return {m: float(v.threshold) for m, v in self.metrics.items()}

    def accepts(self, candidate: CandidateRecord) -> bool:
        """The accept rule: every distance (and the companion's, if any) clears every metric's bar."""
        bars = {m: self.acceptance_margin.bar(t) for m, t in self.thresholds().items()}
        rows = [candidate.nn_distance]
        if candidate.nn_distance_companion is not None:
            rows.append(candidate.nn_distance_companion)
        try:
            return all(row[m] >= bar for row in rows for m, bar in bars.items())
        except KeyError as err:
            raise GateError(f"malformed certificate: candidate {candidate.index} has no {err} distance") from None

    def _released(self) -> list[CandidateRecord]:
        """The accepted candidates the site's reviewer did not withhold, in order."""
        withheld = set(self.review.withheld) if self.review is not None else set()
        return [c for c in self.images if c.accepted and c.digest not in withheld]

    def published_companions(self) -> list[str | None]:
        """Per published image, the digest of its certified companion (None where the gate saw none)."""
        return [c.companion_digest for c in self._released()]

    def check_consistency(self) -> None:
        """Every published image was accepted, and every decision follows from the distances; else GateError."""
        if self.review is not None and not set(self.review.withheld) <= {c.digest for c in self.images if c.accepted}:
            raise GateError("the review withholds an image the gate did not accept")
        if [c.digest for c in self._released()] != self.published:
            raise GateError("published digests do not match the accepted candidates")
        for c in self.images:
            if self.companions.required and c.nn_distance_companion is None:
                raise GateError("the certificate requires companions but a candidate has no companion distance")
            if c.accepted != self.accepts(c):
                raise GateError("a candidate's accepted flag contradicts its distances and the thresholds")
            if c.companion_digest is not None and (not c.accepted or c.nn_distance_companion is None):
                raise GateError("a companion digest is certified for a candidate that was not accepted with it")
        if self.summary.n_published != len(self.published):
            raise GateError("summary count does not match the published images")


class SignedCertificate(BaseModel):
    """The envelope that travels: the certificate body, its Ed25519 signature and the signer's key id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    certificate: dict[str, Any]
    signature: str
    algorithm: Literal["ed25519"] = "ed25519"
    key_id: str

    def to_json(self) -> bytes:
        """The wire and file form (UTF-8 JSON, sorted keys)."""
        import json

        return json.dumps(self.model_dump(mode="json"), sort_keys=True).encode("utf-8")

    def parsed(self) -> Certificate:
        """The body as a :class:`Certificate` (GateError when malformed)."""
        return parse_certificate(self.certificate)


def parse_certificate(body: Any) -> Certificate:
    """A :class:`Certificate` from a received body; :class:`GateError` (one line) when malformed."""
    if not isinstance(body, dict):
        raise GateError("not a signed certificate (no 'certificate' object)")
    if body.get("format") != FORMAT:
        raise GateError(f"unknown certificate format {body.get('format')!r}")
    try:
        return Certificate.model_validate(body)
    except ValidationError as err:
        raise GateError(f"malformed certificate ({format_validation_error(err, 'certificate')})") from None
