"""Phase ``evaluation``: every trained model to every live site; only per-image metrics come back.

All models are scored on the same held-out real test slices of a site,
degraded with the same seed, so the report's comparisons are paired.
Results are handed to ``record`` model by model, so a resumed study only asks
for what is missing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flwr.app import ArrayRecord

from fedsynth.federation import protocol as P
from fedsynth.federation.names import DEGRADED_INPUT, Phase, central_methods, local_model, seeded
from fedsynth.federation.phases import StudyRun

__all__ = ["EVALUATION_SEED_OFFSET", "evaluate", "model_names"]

log = logging.getLogger(__name__)

#: Test degradations use ``seed + EVALUATION_SEED_OFFSET``, never a training seed.
EVALUATION_SEED_OFFSET = 7919

Evaluations = dict[str, dict[str, dict[str, list[float]]]]


def model_names(run: StudyRun) -> list[str]:
    """The trained models to evaluate (every repeat), in report order."""
    second = run.spec.scenario.training.second_strategy
    base = [m.value for m in central_methods(second)]
    base += [local_model(s.site_id) for s in run.roster.alive()]
    names = [seeded(n, k) for n in base for k in run.repeats]
    return [n for n in names if run.models.has(n)]


def evaluate(run: StudyRun, done: Evaluations, patients: dict[str, list[int]], record: Callable[[], None]) -> None:
    """Fill ``done[model][site]`` with per-image metrics and ``patients[site]`` with each image's patient number.

    ``record()`` is called after each model (the study saves its state).
    """
    sc = run.spec.scenario
    request = P.EvaluateRequest(task=sc.task, seed=sc.seed + EVALUATION_SEED_OFFSET)
    for name in model_names(run):
        todo = [s for s in run.roster.alive() if s.site_id not in done.get(name, {})]
        if not todo:
            continue
        content = request.to_content(ArrayRecord(run.models.load(name).state_dict()))
        log.info("evaluation: %s on %s", name, ", ".join(s.site_id for s in todo))
        with run.roster.method(Phase.EVALUATION):
            replies = run.roster.ask(todo, P.MSG_EVALUATE, lambda s, c=content: c, run.timeout_s)
        for sid, r in replies.items():
            reply = P.EvaluateReply.from_content(r.content)
            done.setdefault(name, {})[sid] = {k: reply.per_image[k] for k in P.EvaluateReply.METRICS}
            if all(k in reply.per_image for k in P.EvaluateReply.INPUT_METRICS):
                # the degraded input scored against the clean slice: the same for every model (same seed)
                done.setdefault(DEGRADED_INPUT, {})[sid] = {
                    k: reply.per_image[f"input_{k}"] for k in P.EvaluateReply.METRICS}
            if reply.patients:
                patients[sid] = reply.patients
        record()
