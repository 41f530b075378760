"""``report.json`` of a federated study, built as :class:`fedsynth.report.ReportModel`.

Why here and not in :mod:`fedsynth.report`: the numbers are summarised and
compared by the report package (bootstrap CIs, paired tests, TOST), but
which methods exist, which comparisons answer the study's question and what
the notes must say about fairness are the study's business. The model is
validated when it is written (:func:`fedsynth.report.write_report`).

    >>> report = build_report(spec, state, sites=["site-1", "site-2"], missing={})
    >>> write_study_report(layout, report, pool)
"""

from __future__ import annotations

import logging
from typing import Any

from fedsynth.federation.names import (
    DEGRADED_INPUT,
    METHOD_LABELS,
    Method,
    central_methods,
    compared_methods,
    local_model,
    seeded,
)
from fedsynth.federation.pool import SyntheticPool
from fedsynth.federation.study_dir import StudyLayout, StudySpec
from fedsynth.federation.study_state import StudyState

__all__ = ["build_report", "write_study_report"]

log = logging.getLogger(__name__)


def _participation(spec: StudySpec, state: StudyState, sites: list[str]) -> str:
    """Who actually trained in each weight-averaging round (computed from the rounds, not from the plan)."""
    t = spec.scenario.training
    gaps = []
    for method, rounds in sorted(state.participants.items()):
        for site in sites:
            n = sum(site in r for r in rounds)
            if n < len(rounds):
                gaps.append(f"{site} trained in {n} of {len(rounds)} {method} rounds ({n * t.check_every} local epochs)")
    if not gaps:
        return "Every live site trained in every weight-averaging round."
    return "Not every site trained in every round: " + "; ".join(gaps) + " (report key 'participants')."


def _notes(spec: StudySpec, state: StudyState, sites: list[str]) -> list[str]:
    sc = spec.scenario
    t = sc.training
    n_test = sum(len(set(v)) for v in state.test_patients.values())
    keep = ("keep their Adam state across rounds (in Flower's Context.state)" if t.keep_client_optimizer
            else "start a fresh Adam every round")
    return [
        f"Fairness: every method trains the same network ({sc.task.network}) from the same initial weights "
        f"under one maximum budget ({t.max_epochs} passes over its own training data) and one stopping rule: "
        f"validated every {t.check_every} epochs (a FedAvg round = {t.check_every} local epochs) on the sites' "
        f"validation patients, best weights kept, stopped after {t.patience} validations without a lower "
        f"validation MSE. The report key 'training' states each model's epochs, optimiser steps, samples seen, "
        f"wall time and validation curve. FedAvg-family sites {keep}. " + _participation(spec, state, sites),
        "Validation patients decide every stop; test patients are read once, by the final evaluation. "
        + _convergence(state, t.max_epochs) + " " + _tuning(spec, state),
        "centralised-real reads every site's real training slices in one place: an upper bound "
        "that exists only in simulation and is not deployable.",
        "communication_bytes count the serialised Flower messages (every object as pushed on the "
        "wire) sent and received by the coordinator; synthetic-pool includes generator training "
        "requests, the chunked publish and its validations; evaluation is counted separately.",
        "All models are scored on the same held-out real test slices of every site, degraded with "
        "the same seed, so per-image comparisons are paired; degraded-input is that input itself (no network).",
        f"Verdicts (patient_comparisons) use the patient as the unit: {n_test} test patients over "
        f"{len(state.test_patients)} sites, each patient's mean over its slices and over the {t.seeds} training "
        "seed(s), TOST with its 90 % CI, a site-then-patient bootstrap, a mixed model, Holm's correction over "
        "the family; the per-slice comparisons are description only (slices of one patient are not "
        "independent). One split, one generator per site.",
    ]


def _tuning(spec: StudySpec, state: StudyState) -> str:
    """What the weight-averaging methods were tuned on, or that they were not."""
    t = spec.scenario.training
    parts = []
    for method in ("fedavg", t.second_strategy):
        tuned = state.tuning.get(method)
        if tuned:
            grid = "; ".join(f"{k} in {v}" for k, v in tuned["grid"].items())
            chosen = ", ".join(f"{k} = {v:g}" for k, v in tuned["chosen"].items())
            parts.append(f"{method} tuned on validation (repeat 0, {grid}): {chosen}")
        else:
            fixed = f"proximal_mu = {t.proximal_mu:g}, " if method == "fedprox" else ""
            parts.append(f"{method} not tuned ({fixed}{t.check_every} local epochs per round)")
    return "Tuning: " + "; ".join(parts) + "."


def _convergence(state: StudyState, max_epochs: int) -> str:
    """Whether the budget or the stopping rule ended the trainings (computed, so the note cannot overclaim)."""
    runs = state.training
    if not runs:
        return ""
    capped = sorted(name for name, t in runs.items() if int(t.get("best_epoch", 0)) >= max_epochs)
    if not capped:
        return f"Every one of the {len(runs)} trainings kept weights from before its budget ended (converged)."
    return (f"{len(capped)} of {len(runs)} trainings were still improving on validation when the budget of "
            f"{max_epochs} epochs ended ({', '.join(capped[:6])}{', ...' if len(capped) > 6 else ''}): those "
            "methods are compared at an equal budget, not at convergence.")


def _seed_mean(runs: list[dict[str, dict[str, list[float]]]]) -> dict[str, dict[str, list[float]]]:
    """Per-image metrics averaged over repeats (same test slices, same degradations), for sites in every repeat."""
    import numpy as np

    sites = sorted(set.intersection(*(set(r) for r in runs))) if runs else []
    return {sid: {m: np.mean([r[sid][m] for r in runs], axis=0).tolist() for m in runs[0][sid]} for sid in sites}


def _patient_means(per_method: dict[str, Any], patients: dict[str, list[int]]) -> dict[str, dict[str, list[Any]]]:
    """Per method: its test patients (``site#number``) and each one's mean PSNR over its slices (and seeds)."""
    from fedsynth.report.patients import per_patient

    out: dict[str, dict[str, list[Any]]] = {}
    for name, per_site in per_method.items():
        names: list[str] = []
        psnr: list[float] = []
        for sid, metrics in sorted(per_site.items()):
            if sid not in patients or len(patients[sid]) != len(metrics["psnr"]):
                continue
            keys, means = per_patient(metrics["psnr"], patients[sid])
            names += [f"{sid}#{int(k)}" for k in keys]
            psnr += [float(m) for m in means]
        out[name] = {"patients": names, "psnr": psnr}
    return out


def _per_seed(runs: list[dict[str, dict[str, list[float]]]]) -> dict[str, list[float]]:
    """Pooled per-image mean PSNR/SSIM of each repeat (how much the seed moves a method)."""
    import numpy as np

    return {m: [float(np.mean([x for per in r.values() for x in per[m]])) for r in runs] for m in ("psnr", "ssim")}


#: Metrics where lower is better (the verdict's "better" direction).
_LOWER_IS_BETTER = ("rmse", "rmse_hu")


def _patient_comparisons(spec: StudySpec, state: StudyState, per_method: dict[str, Any],
                         runs: dict[str, list[Any]] | None = None) -> list[dict[str, Any]]:
    """synthetic-pool against every other method, with the patient as the unit, each ending in a verdict.

    One family per test kind for Holm's correction: every (method, metric)
    pair of the study. The margins are the scenario's, fixed before the run.
    The verdict is on seed-averaged patients (the bootstrap CI resamples the
    seeds too, when there are several); ``per_seed`` repeats the
    patient-level mean difference and its 90 % CI within each seed (repeat
    ``k`` of one method against repeat ``k`` of the other), so a reader sees
    whether every seed points the same way.
    """
    from fedsynth.report import add_verdicts, compare_by_patient

    sc = spec.scenario
    pool = per_method.get(Method.SYNTHETIC_POOL.value)
    if pool is None or not state.test_patients:
        return []
    rows = []
    for other in compared_methods(sc.training.second_strategy):
        if other.value not in per_method:
            continue
        for metric, margin in sc.margins.items():
            better = metric not in _LOWER_IS_BETTER
            mine, theirs = (runs or {}).get(Method.SYNTHETIC_POOL.value, []), (runs or {}).get(other.value, [])
            pairs = list(zip(mine, theirs, strict=True)) if len(mine) > 1 and len(theirs) == len(mine) else None
            row = compare_by_patient(pool, per_method[other.value], state.test_patients, metric, margin,
                                     higher_is_better=better, seed=sc.seed, seed_runs=pairs)
            if len(mine) > 1 and len(theirs) == len(mine):
                each = [compare_by_patient(a, b, state.test_patients, metric, margin, higher_is_better=better,
                                           seed=sc.seed, n_boot=200) for a, b in zip(mine, theirs, strict=True)]
                row["per_seed"] = [{"mean_diff": e["mean_diff"], "ci90_low": e["ci90_low"],
                                    "ci90_high": e["ci90_high"]} for e in each]
            rows.append({"a": Method.SYNTHETIC_POOL.value, "b": other.value, **row})
    return add_verdicts(rows)


def build_report(spec: StudySpec, state: StudyState, sites: list[str], missing: dict[str, str],
                 quarantined: list[Any] = ()) -> Any:
    """The study's :class:`~fedsynth.report.ReportModel` from its saved state.

    ``sites`` are the live sites (sorted); when none is known (a report
    rebuilt offline) the sites with evaluations are used. ``quarantined``:
    what the pool's self-check took out of use (:meth:`SyntheticPool.quarantined`).
    """
    from fedsynth.report import ReportModel, compare, summarise

    sc = spec.scenario
    seed = sc.seed
    evals = state.evaluations
    repeats = range(sc.training.seeds)
    alive = sites or sorted({sid for name, per in evals.items() for sid in per if name != DEGRADED_INPUT})
    second = sc.training.second_strategy
    central = central_methods(second)
    runs: dict[str, list[dict[str, dict[str, list[float]]]]] = {}
    for m in central:
        found = [evals[seeded(m.value, k)] for k in repeats if seeded(m.value, k) in evals]
        if found:
            runs[m.value] = found
    local_runs = []
    for k in repeats:
        local = {sid: evals[seeded(local_model(sid), k)][sid] for sid in alive
                 if sid in evals.get(seeded(local_model(sid), k), {})}
        if local:
            local_runs.append(local)
    if local_runs:
        runs[Method.LOCAL_ONLY.value] = local_runs
    per_method: dict[str, Any] = {name: _seed_mean(found) for name, found in runs.items()}
    labels = {m.value: METHOD_LABELS[m] for m in Method}
    if DEGRADED_INPUT in evals:
        per_method[DEGRADED_INPUT] = {sid: v for sid, v in evals[DEGRADED_INPUT].items() if sid in alive}
        labels[DEGRADED_INPUT] = "the degraded input itself, no network (what every method starts from)"
        runs[DEGRADED_INPUT] = [per_method[DEGRADED_INPUT]]
    methods = {name: {**block, "label": labels[name], "per_seed": _per_seed(runs[name])}
               for name, block in summarise(per_method, seed=seed).items()}
    cross = {name: block["per_site"] for name, block in summarise(
        {local_model(sid): evals[local_model(sid)] for sid in alive if local_model(sid) in evals}, seed=seed).items()}
    comparisons: list[dict[str, Any]] = []
    if Method.SYNTHETIC_POOL in per_method:
        for other in compared_methods(second):
            if other in per_method:
                pair = {Method.SYNTHETIC_POOL.value: per_method[Method.SYNTHETIC_POOL],
                        other.value: per_method[other]}
                comparisons += compare(pair, reference_method=other.value, margins=sc.margins, seed=seed)
    patient_comparisons = _patient_comparisons(spec, state, per_method, runs)
    comm = {k: {**v, "total": v["sent"] + v["received"]} for k, v in sorted(state.bytes.items())}
    return ReportModel(
        scenario=sc.name,
        task=sc.task.task,
        network=sc.task.network,
        mode=spec.mode,
        sites=alive,
        missing_sites=dict(sorted(missing.items())),
        methods=methods,
        local_only_cross_site=cross,
        comparisons=comparisons,
        patient_comparisons=patient_comparisons,
        privacy=state.privacy,
        rejected_bundles=state.rejected_bundles,
        communication_bytes=comm,
        participants=state.participants,
        pool_quarantine=[{"site": q.site, "digest": q.digest, "reason": q.reason} for q in quarantined],
        wall_seconds={**state.wall_seconds, "total": float(sum(state.wall_seconds.values()))},
        training=state.training,
        per_patient=_patient_means(per_method, state.test_patients),
        repeats=sc.training.seeds,
        tuning=state.tuning,
        machine=state.machine,
        notes=_notes(spec, state, alive),
    )


def closest_pairs(spec: StudySpec, pool: SyntheticPool, k: int = 4) -> dict[str, Any]:
    """Simulation only: per site, the ``k`` published images nearest to a real training slice (pixel RMSE), with it.

    So a person can look at the closest calls the gate let through. Only a
    simulation may do this: the coordinator then holds the simulated sites'
    data; in deployment real slices never leave a site (a site sees its own
    pairs with ``fedsynth site evaluate``, nearest_real.png).
    """
    if spec.mode != "simulation":
        return {}
    import numpy as np

    from fedsynth.data import ingest_configured_site
    from fedsynth.federation.study_dir import simulated_site
    from fedsynth.privacy import GateConfig
    from fedsynth.privacy.search import ReferenceIndex

    out: dict[str, Any] = {}
    pooled = set(pool.sites())
    for i in range(1, spec.scenario.cohort.sites + 1):
        site = simulated_site(spec.out, spec.scenario, i)
        if site.id not in pooled:
            continue
        train = ingest_configured_site(site).train_images()
        pub = pool.images(site.id)
        if len(pub) == 0 or pub.shape[1:] != train.shape[1:]:
            continue
        dist, idx = ReferenceIndex(train, GateConfig(metrics=["pixel_rmse"])).search("pixel_rmse", pub)
        order = np.argsort(dist, kind="stable")[:k]
        out[site.id] = {"published": pub[order], "real": train[idx[order]], "pixel_rmse": dist[order].tolist()}
    return out


def write_study_report(layout: StudyLayout, report: Any, pool: SyntheticPool,
                       closest: dict[str, Any] | None = None) -> None:
    """``report.json`` (validated on write) and ``report.html`` with a few pooled samples per site.

    ``closest``: :func:`closest_pairs` (simulation), shown side by side.
    ``report.json`` is written first, so a rendering failure loses nothing: it
    is logged with the command that retries it.
    """
    from fedsynth.report import render_html, write_report

    write_report(layout.out, report)
    samples = {f"synthetic {s}": pool.images(s)[:8] for s in pool.sites()}
    figures: dict[str, Any] = {}
    if samples:
        figures["samples"] = samples
    if closest:
        figures["closest"] = closest
    try:
        render_html(report, layout.report_html, figures or None)
    except Exception as err:  # noqa: BLE001 - the study's results are in report.json
        log.error("report.html not written (%s: %s); report.json is complete, retry with: fedsynth report %s",
                  type(err).__name__, err, layout.out)
    log.info("report: %s", layout.report_json)
