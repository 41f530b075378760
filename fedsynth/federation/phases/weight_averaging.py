"""Phases ``fedavg`` and the second strategy: Flower's weight-averaging strategies on the sites' real data.

The same network from the same initial weights, rounds of local epochs at
every live site until validation stops improving, through Flower's own
strategies (``flwr.serverapp.strategy``) on the metered grid, so their bytes
are counted like every other method's.

Tuning (``training.tuning``): a method's grid (its strategy's arguments,
e.g. FedProx's ``proximal_mu`` or FedAvgM's server momentum, and the local
epochs per round) is tried on repeat 0; the setting with the lowest
validation MSE wins and every repeat uses it (repeat 0 keeps the winning
run's model). The grid, every candidate's validation score and the choice
go into the report (``tuning``). Test patients play no part.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any

from flwr.app import ArrayRecord

from fedsynth.federation import protocol as P
from fedsynth.federation.names import Method, seeded
from fedsynth.federation.phases import StudyRun
from fedsynth.federation.roster import StudyError

__all__ = ["weight_averaging"]

log = logging.getLogger(__name__)


def _strategy(method: str, params: dict[str, float], n: int, hooks: Any, proximal_mu: float) -> Any:
    """The Flower strategy of ``method`` with ``params`` (minus ``local_epochs``, which is ours)."""
    from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM, FedProx

    common = dict(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=n, min_evaluate_nodes=n,
                  min_available_nodes=n, train_metrics_aggr_fn=hooks.aggregate_train,
                  evaluate_metrics_aggr_fn=hooks.aggregate_evaluate)
    extra = {k: float(v) for k, v in params.items() if k != "local_epochs"}
    if method == Method.FEDAVG:
        return FedAvg(**common)
    if method == Method.FEDPROX:
        return FedProx(**common, **{"proximal_mu": proximal_mu, **extra})
    if method == Method.FEDAVGM:
        return FedAvgM(**common, **extra)
    if method == Method.FEDADAM:
        return FedAdam(**common, **extra)
    raise ValueError(f"not a weight-averaging method: {method!r}")


def _train(run: StudyRun, method: str, name: str, k: int, params: dict[str, float]) -> tuple[Any, dict[str, Any]]:
    """One training of ``method`` for repeat ``k`` with ``params``; returns (best global state, its summary)."""
    import torch  # noqa: F401 - Flower's to_torch_state_dict needs torch already imported

    from fedsynth.federation.phases.validation import (
        VALIDATION_SEED,
        EarlyStop,
        RoundValidation,
        summary,
    )

    sc = run.spec.scenario
    t = sc.training
    local_epochs = int(params.get("local_epochs", t.check_every))
    budget = t.budget().model_copy(update={"check_every": local_epochs})
    n = len(run.roster.alive())
    hooks = RoundValidation(run, method, budget.patience, local_epochs)
    strategy = _strategy(method, params, n, hooks, t.proximal_mu)
    log.info("%s: up to %d rounds x %d local epochs on %d sites (seed %d%s)", name, budget.max_checks,
             local_epochs, n, sc.seed + k, f", {params}" if params else "")
    t0 = time.perf_counter()
    with run.roster.method(method):
        try:
            strategy.start(
                grid=run.roster.grid, initial_arrays=ArrayRecord(run.models.initial_state(k)),
                num_rounds=budget.max_checks, timeout=sc.site_timeout_s,
                train_config=P.train_config(sc.task, local_epochs, sc.seed + k,
                                            keep_optimizer=name if t.keep_client_optimizer else ""),
                evaluate_config=P.evaluate_config(sc.task, VALIDATION_SEED, "val"),
                evaluate_fn=hooks.after_round,
            )
        except EarlyStop as stop:
            log.info("%s", stop)
    curve = hooks.finish()
    if hooks.best_state is None:
        raise StudyError(f"{name}: no round finished with a validation result")
    info = summary(curve, time.perf_counter() - t0)
    if params:
        info["params"] = dict(params)
    return hooks.best_state, info


def _tune(run: StudyRun, method: str, grid: dict[str, list[float]]) -> dict[str, float]:
    """Try every setting of ``grid`` on repeat 0; keep the winner's model; record the grid; return the winner."""
    names = sorted(grid)
    candidates = [dict(zip(names, values, strict=True)) for values in itertools.product(*(grid[n] for n in names))]
    tried = []
    best: tuple[float, dict[str, float], Any, dict[str, Any]] | None = None
    for i, params in enumerate(candidates):
        state, info = _train(run, method, f"{method}-tune{i}", 0, params)
        val_mse = min(p["val_mse"] for p in info["curve"])
        tried.append({"params": params, "best_val_mse": val_mse, "best_val_psnr": info["best_val_psnr"],
                      "best_epoch": info["best_epoch"], "epochs": info["epochs"], "seconds": info["seconds"]})
        if best is None or val_mse < best[0]:
            best = (val_mse, params, state, info)
    assert best is not None
    _, chosen, state, info = best
    run.tuning[method] = {"grid": grid, "tried": tried, "chosen": chosen,
                          "rule": "lowest validation MSE on repeat 0 (validation patients only)"}
    log.info("%s: tuned on validation: %s", method, chosen)
    run.training[seeded(method, 0)] = info
    run.models.save(seeded(method, 0), state)
    run.checkpoint()
    return chosen


def weight_averaging(run: StudyRun, method: str) -> None:
    """Run ``method`` (``fedavg``, ``fedprox``, ``fedavgm`` or ``fedadam``) once per repeat, tuned first if asked.

    Every round is followed by Flower's federated evaluation on the sites'
    validation patients (:class:`~fedsynth.federation.phases.validation.RoundValidation`);
    the rounds end at the budget or when ``patience`` rounds bring no lower
    validation MSE, and the best round's global model is saved. Sites keep
    their Adam state across rounds (``keep_client_optimizer``).
    """
    grid = run.spec.scenario.training.tuning.get(str(method), {})
    if grid and str(method) not in run.tuning:  # (re)tune: a choice not on record cannot be trusted from a model file
        params = _tune(run, method, grid)
    else:
        params = dict(run.tuning.get(str(method), {}).get("chosen", {}))
    for k in run.repeats:
        name = seeded(method, k)
        if run.models.has(name):
            log.info("%s: model already trained (resume)", name)
            continue
        state, info = _train(run, method, name, k, params)
        run.training[name] = info
        run.models.save(name, state)
        run.checkpoint()
