"""Phase ``local-only``: each site trains the network alone on its own real data, for the full budget."""

from __future__ import annotations

from flwr.app import ArrayRecord

from fedsynth.federation import protocol as P
from fedsynth.federation.names import Method, local_model
from fedsynth.federation.phases import StudyRun

__all__ = ["local_only"]


def local_only(run: StudyRun) -> None:
    """Ask every live site without a saved local model to train ``training.epochs`` epochs from the initial weights."""
    sc = run.spec.scenario
    todo = [s for s in run.roster.alive() if not run.models.has(local_model(s.site_id))]
    content = P.TrainRequest(task=sc.task, local_epochs=sc.training.epochs, seed=sc.seed).to_content(
        ArrayRecord(run.models.initial_state()))
    with run.roster.method(Method.LOCAL_ONLY):
        replies = run.roster.ask(todo, P.MSG_TRAIN, lambda s: content, run.timeout_s)
    for sid, r in replies.items():
        run.models.save(local_model(sid), P.TrainReply.from_content(r.content).weights.to_torch_state_dict())
