"""Phase ``local-only``: each site trains the network alone on its own real data, stopping on its own validation patients."""

from __future__ import annotations

import time

from flwr.app import ArrayRecord

from fedsynth.federation import protocol as P
from fedsynth.federation.names import Method, local_model, seeded
from fedsynth.federation.phases import StudyRun
from fedsynth.federation.phases.validation import summary

__all__ = ["local_only"]


def local_only(run: StudyRun) -> None:
    """Ask every live site to train alone from the initial weights until its own validation patients say stop.

    Once per repeat; the site returns its best weights and its curve.
    """
    sc = run.spec.scenario
    budget = sc.training.budget()
    for k in run.repeats:
        todo = [s for s in run.roster.alive() if not run.models.has(seeded(local_model(s.site_id), k))]
        if not todo:
            continue
        content = P.TrainRequest(task=sc.task, local_epochs=budget.check_every, seed=sc.seed + k,
                                 budget=budget).to_content(ArrayRecord(run.models.initial_state(k)))
        t0 = time.perf_counter()
        with run.roster.method(Method.LOCAL_ONLY):
            replies = run.roster.ask(todo, P.MSG_TRAIN, lambda s, c=content: c, run.timeout_s)
        for sid, r in replies.items():
            reply = P.TrainReply.from_content(r.content)
            name = seeded(local_model(sid), k)
            if reply.curve:
                run.training[name] = summary(reply.curve, time.perf_counter() - t0)
            run.models.save(name, reply.weights.to_torch_state_dict())
        run.checkpoint()
