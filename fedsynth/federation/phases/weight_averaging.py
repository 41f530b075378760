"""Phases ``fedavg`` and the second strategy: Flower's weight-averaging strategies on the sites' real data.

The same network from the same initial weights, ``training.rounds`` rounds of
``epochs // rounds`` local epochs at every live site, through Flower's own
strategies (``flwr.serverapp.strategy``) on the metered grid, so their bytes
are counted like every other method's.
"""

from __future__ import annotations

import logging

from flwr.app import ArrayRecord

from fedsynth.federation import protocol as P
from fedsynth.federation.names import Method
from fedsynth.federation.phases import StudyRun

__all__ = ["weight_averaging"]

log = logging.getLogger(__name__)


def weight_averaging(run: StudyRun, method: str) -> None:
    """Run ``method`` (``fedavg``, ``fedprox`` or ``fedadam``) and save the final global model."""
    import torch  # noqa: F401 - Flower's to_torch_state_dict needs torch already imported
    from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx

    if run.models.has(method):
        log.info("%s: model already trained (resume)", method)
        return
    sc = run.spec.scenario
    t = sc.training
    n = len(run.roster.alive())
    common = dict(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n,
                  min_evaluate_nodes=n, min_available_nodes=n)
    if method == Method.FEDAVG:
        strategy = FedAvg(**common)
    elif method == Method.FEDPROX:
        strategy = FedProx(**common, proximal_mu=t.proximal_mu)
    elif method == Method.FEDADAM:
        strategy = FedAdam(**common)
    else:
        raise ValueError(f"not a weight-averaging method: {method!r}")
    log.info("%s: %d rounds x %d local epochs on %d sites", method, t.rounds, t.epochs // t.rounds, n)
    with run.roster.method(method):
        result = strategy.start(
            grid=run.roster.grid, initial_arrays=ArrayRecord(run.models.initial_state()), num_rounds=t.rounds,
            timeout=sc.site_timeout_s, train_config=P.train_config(sc.task, t.epochs // t.rounds, sc.seed),
        )
    run.models.save(method, result.arrays.to_torch_state_dict())
