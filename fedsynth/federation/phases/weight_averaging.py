"""Phases ``fedavg`` and the second strategy: Flower's weight-averaging strategies on the sites' real data.

The same network from the same initial weights, rounds of ``check_every``
local epochs at every live site until validation stops improving, through Flower's own
strategies (``flwr.serverapp.strategy``) on the metered grid, so their bytes
are counted like every other method's.
"""

from __future__ import annotations

import logging
import time

from flwr.app import ArrayRecord

from fedsynth.federation import protocol as P
from fedsynth.federation.names import Method, seeded
from fedsynth.federation.phases import StudyRun
from fedsynth.federation.roster import StudyError

__all__ = ["weight_averaging"]

log = logging.getLogger(__name__)


def weight_averaging(run: StudyRun, method: str) -> None:
    """Run ``method`` (``fedavg``, ``fedprox`` or ``fedadam``) once per repeat; save the best round's global model.

    Every round is followed by Flower's federated evaluation on the sites'
    validation patients (:class:`~fedsynth.federation.phases.validation.RoundValidation`);
    the rounds end at ``max_epochs // check_every`` or when ``patience``
    rounds bring no lower validation MSE. Sites keep their Adam state across
    rounds (``keep_client_optimizer``).
    """
    import torch  # noqa: F401 - Flower's to_torch_state_dict needs torch already imported
    from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx

    from fedsynth.federation.phases.central import summary
    from fedsynth.federation.phases.validation import VALIDATION_SEED, EarlyStop, RoundValidation

    sc = run.spec.scenario
    t = sc.training
    budget = t.budget()
    for k in run.repeats:
        name = seeded(method, k)
        if run.models.has(name):
            log.info("%s: model already trained (resume)", name)
            continue
        n = len(run.roster.alive())
        hooks = RoundValidation(run, method, budget.patience, budget.check_every)
        common = dict(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=n, min_evaluate_nodes=n,
                      min_available_nodes=n, train_metrics_aggr_fn=hooks.aggregate_train,
                      evaluate_metrics_aggr_fn=hooks.aggregate_evaluate)
        if method == Method.FEDAVG:
            strategy = FedAvg(**common)
        elif method == Method.FEDPROX:
            strategy = FedProx(**common, proximal_mu=t.proximal_mu)
        elif method == Method.FEDADAM:
            strategy = FedAdam(**common)
        else:
            raise ValueError(f"not a weight-averaging method: {method!r}")
        log.info("%s: up to %d rounds x %d local epochs on %d sites (seed %d)", name, budget.max_checks,
                 budget.check_every, n, sc.seed + k)
        t0 = time.perf_counter()
        with run.roster.method(method):
            try:
                strategy.start(
                    grid=run.roster.grid, initial_arrays=ArrayRecord(run.models.initial_state(k)),
                    num_rounds=budget.max_checks, timeout=sc.site_timeout_s,
                    train_config=P.train_config(sc.task, budget.check_every, sc.seed + k,
                                                keep_optimizer=name if t.keep_client_optimizer else ""),
                    evaluate_config=P.evaluate_config(sc.task, VALIDATION_SEED, "val"),
                    evaluate_fn=hooks.after_round,
                )
            except EarlyStop as stop:
                log.info("%s", stop)
        curve = hooks.finish()
        if hooks.best_state is None:
            raise StudyError(f"{name}: no round finished with a validation result")
        run.training[name] = summary(curve, time.perf_counter() - t0)
        run.models.save(name, hooks.best_state)
