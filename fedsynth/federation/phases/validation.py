"""Validation on the sites' validation patients: the evidence every method's stopping rule reads.

Why federated: the coordinator holds no real image, yet the pooled network
must stop by the same rule, on the same patients, as FedAvg. So every
validation is an ``evaluate`` message with ``split = "val"`` to every live
site; the sites score the weights on their validation patients (degraded
with one fixed seed, :data:`VALIDATION_SEED`, the same for every method and
repeat) and only per-image metrics come back. The pooled validation MSE is
the mean of the per-image MSEs over every site's validation slices. Test
patients are never read before the final evaluation.

Two ways in: :func:`federated_validator` for a network trained at the
coordinator (one round of messages per check), and
:class:`RoundValidation`, the hooks that make a Flower strategy's own
federated evaluation do the same after every round (and stop it early).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, MetricRecord, RecordDict

from fedsynth.federation import protocol as P
from fedsynth.federation.phases import StudyRun

__all__ = ["VALIDATION_SEED", "EarlyStop", "RoundValidation", "federated_validator", "pooled", "summary"]

log = logging.getLogger(__name__)

#: The degradation seed of every validation (fixed: all methods and repeats see the same validation inputs).
VALIDATION_SEED = P.VALIDATION_SEED


def summary(curve: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """What the report states about one training: the best check, the effort spent, the curve."""
    best = next((p for p in curve if p.get("best")), curve[-1])
    last = curve[-1]
    return {"best_epoch": int(best["epoch"]), "epochs": int(last["epoch"]), "steps": int(last["steps"]),
            "samples": int(last["samples"]), "best_val_psnr": float(best["val_psnr"]),
            "seconds": float(seconds), "curve": curve}


def pooled(replies: list[P.EvaluateReply]) -> dict[str, float]:
    """Validation MSE (mean per-image MSE over every site's slices) and mean per-image PSNR of several sites."""
    sums = [r.sse_count() for r in replies]
    sse, n = sum(s for s, _ in sums), sum(c for _, c in sums)
    psnr = [x for r in replies for x in r.per_image["psnr"]]
    if n == 0:
        raise ValueError("no validation images came back")
    return {"val_mse": float(sse / n), "val_psnr": float(np.mean(psnr)), "val_images": int(n)}


def _bytes(run: StudyRun, label: str) -> int:
    t = run.roster.grid.totals().get(label, {})
    return int(t.get("sent", 0) + t.get("received", 0))


def federated_validator(run: StudyRun, label: str) -> Callable[[Any], dict[str, float]]:
    """``validate(model)`` for :func:`fedsynth.tasks.train_until_converged`: one round of ``evaluate`` on ``split=val``.

    Messages are metered as ``label`` (the method's bytes include its validations).
    """
    sc = run.spec.scenario
    request = P.EvaluateRequest(task=sc.task, seed=VALIDATION_SEED, split="val")

    def validate(model: Any) -> dict[str, float]:
        content = request.to_content(ArrayRecord(model.state_dict()))
        with run.roster.method(label):
            replies = run.roster.ask(run.roster.alive(), P.MSG_EVALUATE, lambda s: content, run.timeout_s)
        out = pooled([P.EvaluateReply.from_content(r.content) for r in replies.values()])
        return {**out, "bytes": _bytes(run, label)}

    return validate


class EarlyStop(Exception):  # noqa: N818 - a signal, not an error
    """Raised from a strategy's ``evaluate_fn`` to end its rounds: validation stopped improving."""


class RoundValidation:
    """Hooks for a Flower strategy: pooled validation after every round, best weights kept, early stop.

    ``aggregate_train`` / ``aggregate_evaluate`` are the strategy's metric
    aggregation functions (they see every site's reply), ``after_round`` its
    ``evaluate_fn`` (called with the round's global weights after the
    federated evaluation); it raises :class:`EarlyStop` after ``patience``
    rounds without a lower validation MSE.
    """

    def __init__(self, run: StudyRun, label: str, patience: int, check_every: int) -> None:
        from fedsynth.tasks.early_stopping import EarlyStopping

        self.run, self.label, self.check_every = run, label, check_every
        self.stopper = EarlyStopping(patience)
        self.best_state: dict[str, Any] | None = None
        self.curve: list[dict[str, Any]] = []
        self._last: dict[str, float] = {}
        self._steps = 0  # the largest client optimiser's life so far
        self._samples = 0
        self._t0 = time.perf_counter()

    def aggregate_train(self, contents: list[RecordDict], weighted_by_key: str) -> MetricRecord:
        replies = [P.TrainReply.from_content(c) for c in contents]
        self._samples += sum(r.samples for r in replies)
        self._steps = max([self._steps, *(r.optimizer_steps for r in replies)])
        n = sum(r.num_examples for r in replies) or 1
        return MetricRecord({"train-loss": float(sum(r.train_loss * r.num_examples for r in replies) / n),
                             "samples": int(self._samples)})

    def aggregate_evaluate(self, contents: list[RecordDict], weighted_by_key: str) -> MetricRecord:
        self._last = pooled([P.EvaluateReply.from_content(c) for c in contents])
        return MetricRecord({"val-mse": self._last["val_mse"], "val-psnr": self._last["val_psnr"]})

    def after_round(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0:
            return None
        if not self._last:
            raise RuntimeError(f"{self.label}: round {server_round} came back without validation metrics")
        point = {"epoch": server_round * self.check_every, "round": server_round, "steps": self._steps,
                 "samples": self._samples, **self._last, "bytes": _bytes(self.run, self.label),
                 "seconds": time.perf_counter() - self._t0}
        self._last = {}
        if self.stopper.update(point["val_mse"]):
            self.best_state = arrays.to_torch_state_dict()
        self.curve.append(point)
        log.info("%s: round %d validation PSNR %.2f dB", self.label, server_round, point["val_psnr"])
        if self.stopper.stop:
            raise EarlyStop(f"{self.label}: no better validation MSE in {self.stopper.patience} rounds")
        return MetricRecord({"val-mse": point["val_mse"]})

    def finish(self) -> list[dict[str, Any]]:
        """The curve with the best round flagged."""
        return self.stopper.mark_best(self.curve)
