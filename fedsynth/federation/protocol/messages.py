"""Typed requests and replies of the study protocol, with their encoding as Flower records.

Every message has a model here with ``to_content()`` / ``from_content()``:
the site app and the coordinator never read a record key themselves, and a
malformed message is a :class:`ProtocolError` at the boundary. Field names
travel with ``-`` for ``_`` (``n-train``), the names Flower's strategies use.

    >>> content = PublishRequest(gate=gate, quota=120, max_attempts=480).to_content()
    >>> req = PublishRequest.from_content(msg.content)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedsynth.config import format_validation_error
from fedsynth.federation.protocol.keys import (
    CERT_KEY,
    COMPANIONS_KEY,
    CONFIG_KEY,
    IMAGES_KEY,
    METRICS_KEY,
    PROTOCOL_VERSION,
    SITE_KEY,
    WEIGHTS_KEY,
    ProtocolError,
)
from fedsynth.federation.protocol.payloads import (
    blob_to_record,
    config_json,
    images_to_record,
    record_to_blob,
    record_to_images,
)
from fedsynth.privacy.certificate import SignedCertificate
from fedsynth.privacy.config import GateConfig
from fedsynth.tasks.config import Budget, TaskConfig

__all__ = [
    "EvaluateReply",
    "EvaluateRequest",
    "GeneratorReply",
    "GeneratorRequest",
    "PingRequest",
    "PublishChunk",
    "PublishRequest",
    "SiteInfo",
    "TrainReply",
    "TrainRequest",
    "VALIDATION_SEED",
    "evaluate_config",
    "train_config",
    "weights_of",
]


class _Fields(BaseModel):
    """Flat fields of one record; on the wire each name has ``-`` for ``_`` (``n-train``)."""

    model_config = ConfigDict(alias_generator=lambda n: n.replace("_", "-"), populate_by_name=True,
                              extra="forbid", frozen=True)

    def wire(self) -> dict[str, Any]:
        """The record's values by wire name, in field order."""
        return self.model_dump(by_alias=True)

    @classmethod
    def from_record(cls, record: Any, key: str) -> Self:
        """Validate a received ``ConfigRecord``/``MetricRecord``; :class:`ProtocolError` when malformed."""
        if not isinstance(record, (ConfigRecord, MetricRecord)):
            raise ProtocolError(f"record '{key}' is missing or not a config/metric record")
        try:
            return cls.model_validate(dict(record))
        except ValidationError as err:
            raise ProtocolError(format_validation_error(err, f"record '{key}'")) from None


def _record(content: RecordDict, key: str) -> Any:
    if key not in content:
        raise ProtocolError(f"message lacks the '{key}' record")
    return content[key]


def _json_field(value: Any, what: str) -> Any:
    if not isinstance(value, str):
        raise ProtocolError(f"'{what}' must be a JSON string")
    try:
        return json.loads(value)
    except ValueError:
        raise ProtocolError(f"'{what}' is not valid JSON") from None


def _from_config(model: type[BaseModel], content: RecordDict, json_key: str, optional_json: tuple[str, ...] = ()) -> Any:
    """A request model from the ``config`` record, wire names mapped to fields, ``json_key`` decoded.

    ``optional_json`` names further JSON fields, decoded when present.
    """
    cfg = dict(_record(content, CONFIG_KEY))
    data = {k.replace("-", "_"): v for k, v in cfg.items()}
    data[json_key] = _json_field(cfg.get(json_key), json_key)
    for key in optional_json:
        if key in cfg:
            data[key] = _json_field(cfg[key], key)
    return _typed(model, data, CONFIG_KEY)


def _typed(model: type[BaseModel], data: Any, what: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ProtocolError(format_validation_error(err, what)) from None


class PingRequest(_Fields):
    """``query.ping``: who are you?"""

    protocol: int = PROTOCOL_VERSION

    def to_content(self) -> RecordDict:
        return RecordDict({CONFIG_KEY: ConfigRecord(self.wire())})


class SiteInfo(_Fields):
    """Reply to ``query.ping``: public facts about a site, counts only."""

    site_id: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # names registry files: never a path
    modality: str
    n_train: int
    n_val: int = 0
    n_test: int
    image_size: int
    generator_ready: bool

    def to_content(self) -> RecordDict:
        return RecordDict({SITE_KEY: ConfigRecord(self.wire())})

    @classmethod
    def from_content(cls, content: RecordDict) -> SiteInfo:
        return cls.from_record(_record(content, SITE_KEY), SITE_KEY)


class GeneratorRequest(BaseModel):
    """``query.train_generator``: train (or resume, or skip) the site's LDM with this profile."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    profile: str
    overrides: dict[str, Any] = {}

    def to_content(self) -> RecordDict:
        return RecordDict({CONFIG_KEY: ConfigRecord(
            {"profile": self.profile, "overrides": json.dumps(self.overrides, sort_keys=True)})})

    @classmethod
    def from_content(cls, content: RecordDict) -> GeneratorRequest:
        cfg = _record(content, CONFIG_KEY)
        return _typed(cls, {"profile": cfg.get("profile"),
                            "overrides": _json_field(cfg.get("overrides", "{}"), "overrides")}, CONFIG_KEY)


class GeneratorReply(_Fields):
    """Reply to ``query.train_generator``: the checkpoint's hash (and how long it took)."""

    site_id: str
    checkpoint_hash: str
    skipped: bool
    seconds: float = 0.0

    def to_content(self) -> RecordDict:
        head = {k: v for k, v in self.wire().items() if k != "seconds"}
        return RecordDict({SITE_KEY: ConfigRecord(head), METRICS_KEY: MetricRecord({"seconds": self.seconds})})

    @classmethod
    def from_content(cls, content: RecordDict) -> GeneratorReply:
        head = dict(_record(content, SITE_KEY))
        secs = content[METRICS_KEY].get("seconds", 0.0) if METRICS_KEY in content else 0.0
        return cls.from_record(ConfigRecord({**head, "seconds": float(secs)}), SITE_KEY)


class PublishRequest(BaseModel):
    """``query.publish``: images ``offset ... offset + chunk_images`` of the site's gate-certified bundle.

    The gate settings, quota and candidate budget are the coordinator's
    *request*: the site runs the stricter of them and its own privacy policy,
    and refuses a request that asks for less. ``study_id`` and ``nonce`` are
    signed into the certificate, so the bundle answers this request only.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    gate: GateConfig
    quota: int = Field(..., ge=1)
    max_attempts: int = Field(..., ge=1)
    study_id: str = Field(..., min_length=1, max_length=128)  # signed into the certificate
    nonce: str = Field(..., min_length=16, max_length=128)  # this request's; signed into the certificate
    seed: int = 0
    sample_steps: int = Field(0, ge=0)  # 0: the generator profile's default
    chunk_images: int = Field(0, ge=0)  # 0: the whole bundle in one reply
    offset: int = Field(0, ge=0)
    two_sample: bool = False  # also run the classifier two-sample test on the bundle (numbers into the certificate)
    # also send each published image's companion (its untextured sample, certified by the same gate, which must
    # then require companions): the study's untextured-pool arm
    companions: bool = False

    def to_content(self) -> RecordDict:
        return RecordDict({CONFIG_KEY: ConfigRecord({
            "gate": config_json(self.gate), "quota": self.quota, "max-attempts": self.max_attempts,
            "study-id": self.study_id, "nonce": self.nonce, "seed": self.seed,
            "sample-steps": self.sample_steps, "chunk-images": self.chunk_images, "offset": self.offset,
            "two-sample": self.two_sample, "companions": self.companions})})

    @classmethod
    def from_content(cls, content: RecordDict) -> PublishRequest:
        return _from_config(cls, content, "gate")


@dataclass(frozen=True)
class PublishChunk:
    """Reply to ``query.publish``: one chunk of the bundle (the signed certificate with offset 0 only)."""

    site_id: str
    offset: int
    n_total: int
    quota_met: bool
    n_accepted: int
    n_rejected: int
    acceptance_rate: float
    images: np.ndarray
    signed: SignedCertificate | None = None
    companions: np.ndarray | None = None  # the same range of the certified companions, when they were asked for
    pending: bool = False  # the site's reviewer has not decided yet: ask again later (no images, no certificate)

    def to_content(self) -> RecordDict:
        content = RecordDict({
            IMAGES_KEY: images_to_record(self.images),
            SITE_KEY: ConfigRecord({"site-id": self.site_id, "quota-met": bool(self.quota_met),
                                    "offset": int(self.offset), "n-total": int(self.n_total),
                                    "pending-review": bool(self.pending)}),
            METRICS_KEY: MetricRecord({"n-accepted": int(self.n_accepted), "n-rejected": int(self.n_rejected),
                                       "acceptance-rate": float(self.acceptance_rate)}),
        })
        if self.signed is not None:
            content[CERT_KEY] = blob_to_record(self.signed.to_json())
        if self.companions is not None:
            content[COMPANIONS_KEY] = images_to_record(self.companions)
        return content

    @classmethod
    def from_content(cls, content: RecordDict) -> PublishChunk:
        head = _record(content, SITE_KEY)
        metrics = content.get(METRICS_KEY) or MetricRecord()
        signed = None
        if CERT_KEY in content:
            # A certificate that does not even parse is kept as "unsigned": the pool rejects and records it.
            try:
                signed = SignedCertificate.model_validate_json(record_to_blob(content[CERT_KEY]))
            except (ValueError, ProtocolError):
                signed = None
        try:
            return cls(site_id=str(head["site-id"]), offset=int(head["offset"]), n_total=int(head["n-total"]),
                       quota_met=bool(head.get("quota-met", False)),
                       n_accepted=int(metrics.get("n-accepted", 0)), n_rejected=int(metrics.get("n-rejected", 0)),
                       acceptance_rate=float(metrics.get("acceptance-rate", 0.0)),
                       images=record_to_images(_record(content, IMAGES_KEY)), signed=signed,
                       companions=(record_to_images(_record(content, COMPANIONS_KEY))
                                   if COMPANIONS_KEY in content else None),
                       pending=bool(head.get("pending-review", False)))
        except (KeyError, TypeError, ValueError) as err:
            raise ProtocolError(f"malformed publish reply ({type(err).__name__}: {err})") from None


def train_config(task: TaskConfig, local_epochs: int, seed: int, keep_optimizer: str = "") -> ConfigRecord:
    """The ``config`` record of ``train`` messages (Flower's strategies add ``server-round``, FedProx ``proximal-mu``).

    ``keep_optimizer`` names the optimiser state the site keeps across rounds
    (empty: a fresh optimiser every round).
    """
    return ConfigRecord({"task": config_json(task), "local-epochs": int(local_epochs), "seed": int(seed),
                         "keep-optimizer": str(keep_optimizer)})


class TrainRequest(BaseModel):
    """``train``: local epochs of the downstream network from the given weights, on the site's real data.

    Two kinds: a weight-averaging round (``local_epochs`` epochs; with
    ``keep_optimizer`` the site keeps its Adam state under that name in the
    node's Flower ``Context.state`` from round to round, and a first round
    starts it fresh), or a whole local training (``budget`` given: the site
    trains until its own validation patients stop improving, at most
    ``budget.max_epochs``, and returns the best weights and its curve).
    Keys a Flower strategy adds beyond those named here are ignored, never acted on.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)
    task: TaskConfig
    local_epochs: int
    seed: int = 0
    server_round: int = 0
    proximal_mu: float = 0.0
    keep_optimizer: str = Field("", pattern=r"^[A-Za-z0-9_.:@-]{0,64}$")
    budget: Budget | None = None

    def to_content(self, weights: ArrayRecord) -> RecordDict:
        cfg = train_config(self.task, self.local_epochs, self.seed, self.keep_optimizer)
        if self.budget is not None:
            cfg["budget"] = config_json(self.budget)
        return RecordDict({WEIGHTS_KEY: weights, CONFIG_KEY: cfg})

    @classmethod
    def from_content(cls, content: RecordDict) -> TrainRequest:
        return _from_config(cls, content, "task", optional_json=("budget",))


@dataclass(frozen=True)
class TrainReply:
    """Reply to ``train``: the updated weights, what Flower's strategies need to weight them, and the effort.

    ``steps``: optimiser steps taken by this call; ``optimizer_steps``: the
    site's optimiser's steps over its life (more than ``steps`` when it kept
    its state from earlier rounds); ``samples``: training patches seen;
    ``curve``: the validation curve of a whole local training.
    """

    weights: ArrayRecord
    train_loss: float
    num_examples: int
    steps: int = 0
    optimizer_steps: int = 0
    samples: int = 0
    curve: list[dict[str, Any]] = field(default_factory=list)

    def to_content(self) -> RecordDict:
        content = RecordDict({WEIGHTS_KEY: self.weights, METRICS_KEY: MetricRecord(
            {"train-loss": float(self.train_loss), "num-examples": int(self.num_examples),
             "steps": int(self.steps), "optimizer-steps": int(self.optimizer_steps),
             "samples": int(self.samples)})})
        if self.curve:
            content[CONFIG_KEY] = ConfigRecord({"curve": json.dumps(self.curve)})
        return content

    @classmethod
    def from_content(cls, content: RecordDict) -> TrainReply:
        m = _record(content, METRICS_KEY)
        curve = _json_field(content[CONFIG_KEY].get("curve", "[]"), "curve") if CONFIG_KEY in content else []
        if not isinstance(curve, list) or not all(isinstance(p, dict) for p in curve):
            raise ProtocolError("train reply: 'curve' must be a list of objects")
        return cls(weights_of(content), float(m.get("train-loss", 0.0)), int(m.get("num-examples", 0)),
                   int(m.get("steps", 0)), int(m.get("optimizer-steps", 0)), int(m.get("samples", 0)), curve)


Split = Literal["val", "test"]

#: The degradation seed of every validation at the coordinator's request (all methods and repeats see the same
#: validation inputs); a site's own local-only training validates with ``its training seed + VALIDATION_SEED``.
VALIDATION_SEED = 4099


def evaluate_config(task: TaskConfig, seed: int, split: Split = "test") -> ConfigRecord:
    """The ``config`` record of ``evaluate`` messages (also what a Flower strategy's ``evaluate_config`` is)."""
    return ConfigRecord({"task": config_json(task), "seed": int(seed), "split": split})


class EvaluateRequest(BaseModel):
    """``evaluate``: per-image metrics of the given weights on the site's validation or held-out test patients.

    ``split = "val"`` is what every choice of a study is made on (early
    stopping, tuning); ``"test"`` is read once, by the final evaluation.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)
    task: TaskConfig
    seed: int = 0
    split: Split = "test"
    server_round: int = 0  # added by Flower's strategies when they evaluate

    def to_content(self, weights: ArrayRecord) -> RecordDict:
        return RecordDict({WEIGHTS_KEY: weights, CONFIG_KEY: evaluate_config(self.task, self.seed, self.split)})

    @classmethod
    def from_content(cls, content: RecordDict) -> EvaluateRequest:
        return _from_config(cls, content, "task")


@dataclass(frozen=True)
class EvaluateReply:
    """Reply to ``evaluate``: per-image PSNR/SSIM/RMSE (lists), their means, and each image's patient number.

    ``patients[i]`` numbers the patient of image ``i`` 0, 1, 2, ... in an
    order only the site knows: enough for the coordinator to use the patient
    as the statistical unit, nothing that names one. ``per_image`` also
    carries ``input_psnr``/``input_ssim``/``input_rmse``: the degraded input
    itself scored against the clean image (the "no network" row).
    """

    METRICS: ClassVar[tuple[str, ...]] = ("psnr", "ssim", "rmse")
    INPUT_METRICS: ClassVar[tuple[str, ...]] = ("input_psnr", "input_ssim", "input_rmse")
    per_image: dict[str, list[float]]
    patients: list[int] = field(default_factory=list)

    def to_content(self) -> RecordDict:
        n = len(self.per_image.get("psnr", []))
        metrics: dict[str, Any] = {"num-examples": int(n)}
        for k, v in self.per_image.items():
            metrics[k] = [float(x) for x in v]
            metrics[f"{k}-mean"] = float(np.mean(v)) if len(v) else 0.0
        metrics["patient"] = [int(p) for p in self.patients]
        return RecordDict({METRICS_KEY: MetricRecord(metrics)})

    @classmethod
    def from_content(cls, content: RecordDict) -> EvaluateReply:
        m = _record(content, METRICS_KEY)
        try:
            per_image = {k: [float(x) for x in m[k]] for k in cls.METRICS}
            per_image.update({k: [float(x) for x in m[k]] for k in cls.INPUT_METRICS if k in m})
            patients = [int(x) for x in m.get("patient", [])]
        except (KeyError, TypeError, ValueError) as err:
            raise ProtocolError(f"malformed evaluate reply ({type(err).__name__}: {err})") from None
        n = len(per_image["psnr"])
        if any(len(v) != n for v in per_image.values()):
            raise ProtocolError("evaluate reply: metric lists of different lengths")
        if patients and len(patients) != n:
            raise ProtocolError(f"evaluate reply: {len(patients)} patient numbers for {n} images")
        return cls(per_image, patients)

    def sse_count(self) -> tuple[float, int]:
        """(sum over images of the per-image MSE, images): what pooled validation MSE adds up."""
        rmse = np.asarray(self.per_image["rmse"], dtype=np.float64)
        return float(np.sum(rmse ** 2)), int(rmse.size)


def weights_of(content: RecordDict) -> ArrayRecord:
    """The ``arrays`` record (a state dict) of a message."""
    rec = _record(content, WEIGHTS_KEY)
    if not isinstance(rec, ArrayRecord):
        raise ProtocolError(f"record '{WEIGHTS_KEY}' must be an ArrayRecord")
    return rec


