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

from fedsynth.federation.names import METHOD_LABELS, Method, local_model
from fedsynth.federation.pool import SyntheticPool
from fedsynth.federation.study_dir import StudyLayout, StudySpec
from fedsynth.federation.study_state import StudyState

__all__ = ["build_report", "write_study_report"]

log = logging.getLogger(__name__)


def _participation(spec: StudySpec, state: StudyState, sites: list[str]) -> str:
    """The fairness claim, computed from who actually trained in each round (not from the plan)."""
    t = spec.scenario.training
    per_round = t.epochs // t.rounds
    gaps = []
    for method, rounds in sorted(state.participants.items()):
        for site in sites:
            n = sum(site in r for r in rounds)
            if n < len(rounds):
                gaps.append(f"{site} trained in {n} of {len(rounds)} {method} rounds ({n * per_round} local epochs)")
    if not gaps:
        return (f"FedAvg and {t.second_strategy} run {t.rounds} rounds x {per_round} local epochs = "
                f"{t.epochs} local epochs at every site.")
    return (f"FedAvg and {t.second_strategy} were planned as {t.rounds} rounds x {per_round} local epochs, but "
            + "; ".join(gaps) + " (report key 'participants').")


def _notes(spec: StudySpec, state: StudyState, sites: list[str]) -> list[str]:
    sc = spec.scenario
    t = sc.training
    return [
        f"Fairness: every method trains the same network ({sc.task.network}) from the same "
        f"initial weights for the same number of epochs: synthetic-pool, centralised-real and "
        f"local-only run {t.epochs} epochs; " + _participation(spec, state, sites),
        "centralised-real reads every site's real training slices in one place: an upper bound "
        "that exists only in simulation and is not deployable.",
        "communication_bytes count the serialised Flower messages (every object as pushed on the "
        "wire) sent and received by the coordinator; synthetic-pool includes generator training "
        "requests and the chunked publish; evaluation is counted separately.",
        "All models are scored on the same held-out real test slices of every site, degraded with "
        "the same seed, so per-image comparisons are paired.",
        f"Verdicts (patient_comparisons) use the patient as the unit: {sum(len(set(v)) for v in state.test_patients.values())} "
        f"test patients over {len(state.test_patients)} sites, per-patient mean differences, TOST with its 90 % CI, a "
        "site-then-patient bootstrap, a mixed model, Holm's correction over the family; the per-slice "
        "comparisons are description only (slices of one patient are not independent). One seed, one split.",
    ]


#: Metrics where lower is better (the verdict's "better" direction).
_LOWER_IS_BETTER = ("rmse", "rmse_hu")


def _patient_comparisons(spec: StudySpec, state: StudyState, per_method: dict[str, Any]) -> list[dict[str, Any]]:
    """synthetic-pool against every other method, with the patient as the unit, each ending in a verdict.

    One family per test kind for Holm's correction: every (method, metric)
    pair of the study. The margins are the scenario's, fixed before the run.
    """
    from fedsynth.report import add_verdicts, compare_by_patient

    sc = spec.scenario
    pool = per_method.get(Method.SYNTHETIC_POOL.value)
    if pool is None or not state.test_patients:
        return []
    rows = []
    for other in (Method.FEDAVG, Method(sc.training.second_strategy), Method.CENTRALISED_REAL, Method.LOCAL_ONLY):
        if other.value not in per_method:
            continue
        for metric, margin in sc.margins.items():
            row = compare_by_patient(pool, per_method[other.value], state.test_patients, metric, margin,
                                     higher_is_better=metric not in _LOWER_IS_BETTER, seed=sc.seed)
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
    alive = sites or sorted({sid for per in evals.values() for sid in per})
    second = sc.training.second_strategy
    central = (Method.SYNTHETIC_POOL, Method.FEDAVG, Method(second), Method.CENTRALISED_REAL)
    per_method: dict[str, Any] = {m.value: evals[m] for m in central if m in evals}
    local = {sid: evals[local_model(sid)][sid] for sid in alive if sid in evals.get(local_model(sid), {})}
    if local:
        per_method[Method.LOCAL_ONLY.value] = local
    methods = {name: {**block, "label": METHOD_LABELS[Method(name)]}
               for name, block in summarise(per_method, seed=seed).items()}
    cross = {name: block["per_site"] for name, block in summarise(
        {local_model(sid): evals[local_model(sid)] for sid in alive if local_model(sid) in evals}, seed=seed).items()}
    comparisons: list[dict[str, Any]] = []
    if Method.SYNTHETIC_POOL in per_method:
        for other in (Method.FEDAVG, Method(second), Method.CENTRALISED_REAL, Method.LOCAL_ONLY):
            if other in per_method:
                pair = {Method.SYNTHETIC_POOL.value: per_method[Method.SYNTHETIC_POOL],
                        other.value: per_method[other]}
                comparisons += compare(pair, reference_method=other.value, margins=sc.margins, seed=seed)
    patient_comparisons = _patient_comparisons(spec, state, per_method)
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
        notes=_notes(spec, state, alive),
    )


def write_study_report(layout: StudyLayout, report: Any, pool: SyntheticPool) -> None:
    """``report.json`` (validated on write) and ``report.html`` with a few pooled samples per site.

    ``report.json`` is written first, so a rendering failure loses nothing: it
    is logged with the command that retries it.
    """
    from fedsynth.report import render_html, write_report

    write_report(layout.out, report)
    samples = {f"synthetic {s}": pool.images(s)[:8] for s in pool.sites()}
    try:
        render_html(report, layout.report_html, {"samples": samples} if samples else None)
    except Exception as err:  # noqa: BLE001 - the study's results are in report.json
        log.error("report.html not written (%s: %s); report.json is complete, retry with: fedsynth report %s",
                  type(err).__name__, err, layout.out)
    log.info("report: %s", layout.report_json)
