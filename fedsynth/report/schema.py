"""The schema of ``report.json`` (the keys listed in ``docs/tasks.md``, "Report"), as pydantic models.

Why a schema: the report is what a reader (or a later tool) trusts, and it is
assembled by several stages. Validating it once, on write and on read, turns
a malformed or hand-edited file into one clear line instead of a broken page.

Metric values are either a plain mean (what the federation's summaries
write) or ``{mean, ci_low, ci_high, std}`` (what :func:`fedsynth.report.summarise`
writes); ``None`` marks a metric that could not be computed. Top-level keys
beyond the documented ones are kept as they are.

    >>> model = load_report("runs/demo/report.json")
    >>> model.methods["synthetic-pool"].pooled.psnr
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field

from fedsynth.config import StrictModel, validate
from fedsynth.errors import ConfigError

__all__ = [
    "Comparison",
    "MethodResult",
    "MetricSummary",
    "MixedModelFit",
    "PatientComparison",
    "PrivacySite",
    "ReportModel",
    "SiteMetrics",
    "Traffic",
    "load_report",
    "metric_mean",
    "validate_report",
]


class MetricSummary(StrictModel):
    """Mean of a per-image metric with its bootstrap 95% CI."""

    mean: float
    ci_low: float | None = None
    ci_high: float | None = None
    std: float | None = None


MetricValue = MetricSummary | float | None


def metric_mean(value: MetricValue) -> float | None:
    """The mean of a metric value in either form."""
    return value.mean if isinstance(value, MetricSummary) else value


class SiteMetrics(StrictModel):
    """Metrics of one method on one site's test images (or pooled over sites)."""

    model_config = ConfigDict(extra="allow")
    psnr: MetricValue
    ssim: MetricValue
    rmse: MetricValue
    n: int = Field(..., ge=0)
    rmse_hu: MetricValue = None


class MethodResult(StrictModel):
    model_config = ConfigDict(extra="allow")
    per_site: dict[str, SiteMetrics]
    pooled: SiteMetrics
    label: str | None = None


class Comparison(StrictModel):
    """Paired comparison ``a - b`` on one metric, on one site's images or pooled (``site`` = "pooled")."""

    model_config = ConfigDict(extra="allow")
    a: str
    b: str
    metric: str
    site: str = "pooled"
    n: int | None = None
    mean_diff: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    p_ttest: float | None
    p_wilcoxon: float | None = None
    p_tost: float | None
    margin: float = Field(..., gt=0)
    equivalent: bool | None = None
    significant: bool | None = None


class MixedModelFit(StrictModel):
    """The mixed model's fixed intercept (mean per-image difference) with its Wald CI and p."""

    model_config = ConfigDict(extra="allow")
    estimate: float
    ci_low: float | None = None
    ci_high: float | None = None
    p: float | None = None
    model: str | None = Field(None, description="random intercepts fitted: 'site + patient' or 'patient'")


class PatientComparison(StrictModel):
    """``a - b`` on one metric with the patient as the unit (:func:`fedsynth.report.compare_by_patient`).

    ``ci90_*`` is the t-interval that matches TOST at alpha (level 1 - 2 alpha),
    ``ci95_*`` the site-then-patient(-then-seed) bootstrap (level 1 - alpha); the ``*_holm``
    p-values and ``verdict`` are added by :func:`fedsynth.report.add_verdicts`.
    """

    model_config = ConfigDict(extra="allow")
    a: str
    b: str
    metric: str
    site: str = "pooled"
    unit: str = "patient"
    n_patients: int = Field(..., ge=0)
    n_sites: int | None = Field(None, ge=0)
    n_images: int | None = Field(None, ge=0)
    mean_diff: float | None
    ci90_low: float | None = None
    ci90_high: float | None = None
    ci95_low: float | None = None
    ci95_high: float | None = None
    p_ttest: float | None
    p_wilcoxon: float | None = None
    p_tost: float | None
    p_noninferior: float | None = None
    margin: float = Field(..., gt=0)
    higher_is_better: bool = True
    alpha: float | None = Field(None, gt=0, lt=0.5)
    mixed: MixedModelFit | None = None
    bootstrap_levels: str | None = Field(None, description="what the bootstrap resampled: 'sites, patients[, seeds (k)]'")
    skipped_sites: dict[str, str] = Field(default_factory=dict)
    p_ttest_holm: float | None = None
    p_tost_holm: float | None = None
    p_noninferior_holm: float | None = None
    verdict: Literal["superior", "equivalent", "non-inferior", "inferior", "inconclusive"] | None = None
    verdict_text: str | None = None


class PrivacySite(StrictModel):
    """The gate's statistics for one site (thresholds/distances may be per metric)."""

    model_config = ConfigDict(extra="allow")
    threshold: float | dict[str, float | None] | None = None
    min_nn_distance: float | dict[str, float | None] | None = None
    n_published: int | None = Field(None, ge=0)
    n_rejected: int | None = Field(None, ge=0)
    acceptance_rate: float | None = None
    quota_met: bool | None = None
    status: str | None = Field(None, description="why a site has no verified bundle")


class Traffic(StrictModel):
    """Bytes the coordinator sent and received for one method (serialised Flower messages)."""

    sent: int = Field(..., ge=0)
    received: int = Field(..., ge=0)
    total: int = Field(..., ge=0)


class TrainingEffort(StrictModel):
    """How one model was trained: where validation stopped it and what it spent (one maximum budget for all)."""

    model_config = ConfigDict(extra="allow")
    best_epoch: int = Field(..., ge=0, description="epoch of the kept (best validation) weights")
    epochs: int = Field(..., ge=0, description="epochs run before stopping")
    steps: int = Field(..., ge=0, description="optimiser steps (FedAvg-family: the longest-lived client optimiser)")
    samples: int = Field(..., ge=0, description="training patches seen (FedAvg-family: summed over sites)")
    best_val_psnr: float | None = None
    seconds: float = Field(..., ge=0)
    curve: list[dict[str, Any]] = Field(default_factory=list, description="one entry per validation")


class ReportModel(StrictModel):
    """``report.json``.

    The DESIGN keys (``methods``, ``comparisons``, ``privacy``,
    ``communication_bytes``, ``wall_seconds``) plus what a federated study
    adds (scenario, sites, cross-site local-only scores, rejected bundles)
    and ``patient_comparisons``: the verdicts, with the patient as the unit
    (``comparisons`` are per slice and descriptive only).
    Written with only the fields its maker set (:func:`fedsynth.report.write_report`).
    """

    model_config = ConfigDict(extra="allow")
    scenario: str | None = None
    task: str | None = None
    network: str | None = None
    mode: str | None = None
    sites: list[str] = Field(default_factory=list)
    missing_sites: list[str] | dict[str, str] = Field(default_factory=list)
    methods: dict[str, MethodResult]
    local_only_cross_site: dict[str, dict[str, SiteMetrics]] = Field(default_factory=dict)
    comparisons: list[Comparison] = Field(default_factory=list)
    patient_comparisons: list[PatientComparison] = Field(
        default_factory=list, description="comparisons with the patient as the unit, each with a verdict")
    privacy: dict[str, PrivacySite] = Field(default_factory=dict)
    rejected_bundles: dict[str, str] = Field(default_factory=dict)
    communication_bytes: dict[str, int | Traffic] = Field(default_factory=dict)
    participants: dict[str, list[list[str]]] = Field(
        default_factory=dict, description="per weight-averaging method: the sites that trained in each round")
    pool_quarantine: list[dict[str, str]] = Field(
        default_factory=list, description="pooled images taken out of use by the pool's self-check, and why")
    wall_seconds: float | dict[str, float] = 0.0
    training: dict[str, TrainingEffort] = Field(
        default_factory=dict, description="per trained model (method, method@seedK, local-<site>): effort and curve")
    repeats: int | None = Field(None, ge=1, description="downstream training seeds per method")
    per_patient: dict[str, dict[str, list[Any]]] = Field(
        default_factory=dict, description="per method: test patients ('site#number') and each one's mean PSNR "
        "over its slices and seeds (the unit of the verdicts)")
    machine: dict[str, Any] = Field(default_factory=dict,
                                    description="the coordinator machine's measured conv speed (GFLOP/s) and what it is")
    tuning: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per tuned method: grid, validation score of each setting, the choice")
    notes: list[str] = Field(default_factory=list)


def validate_report(data: Any, source: str = "report") -> ReportModel:
    """A :class:`ReportModel` from a dict or model; :class:`ConfigError` (one line) when malformed."""
    if isinstance(data, ReportModel):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a JSON object, got {type(data).__name__}")
    return validate(ReportModel, data, source)


def load_report(path: str | Path) -> ReportModel:
    """Read and validate ``report.json`` (raises :class:`ConfigError` with one line)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from None
    return validate_report(data, str(path))
