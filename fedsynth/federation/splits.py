"""Re-splits: the whole study once per patient split, analysed together with the patient as the unit.

Why: seeds repeat only the downstream training; the generators, the gate's
draws and which patients are held out stay fixed, so a verdict from one
split could be a property of that split. With ``[cohort] splits = S`` a
simulation runs the complete study S times into ``out/split-<k>/``, each
with fold k of :func:`fedsynth.data.split.split_patients` (patients
re-dealt, generators retrained, a fresh pool), and then writes one
``out/report.json`` from all of them.

The folds' test patients are disjoint, so every (fold, patient) is a
distinct patient: the combined analysis is the single-split one with more
patients per site (split k's test patient n is numbered ``1000 k + n``).
Each split keeps its own complete report (privacy, training curves,
tuning) in its directory; the combined report carries split 0's training
and tuning detail, every split's privacy rows (``site@split<k>``), summed
bytes and wall times, and each split's own verdicts under ``splits``.

    >>> report = run_split_study(scenario, Path("runs/evidence"))   # scenario.cohort.splits == 2
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fedsynth.federation.config import ScenarioConfig
from fedsynth.federation.study_dir import StudyLayout, StudySpec
from fedsynth.federation.study_state import StudyState, merge_bytes

__all__ = ["PATIENTS_PER_FOLD", "combine_splits", "merge_states", "run_split_study", "split_dir"]

log = logging.getLogger(__name__)

#: Split k's test patient n is patient ``PATIENTS_PER_FOLD * k + n`` of the combined analysis.
PATIENTS_PER_FOLD = 1000


def split_dir(out: Path, fold: int) -> Path:
    """The study directory of split ``fold`` inside ``out``."""
    return Path(out) / f"split-{fold}"


def run_split_study(scenario: ScenarioConfig, out: Path, **simulate: Any) -> dict[str, Any]:
    """Run the simulated study once per split (resuming any that finished), then combine; returns report.json's content.

    ``simulate``: keyword arguments of
    :func:`~fedsynth.federation.simulation.run_simulated_study`.
    """
    from fedsynth.federation.simulation import run_simulated_study

    out = Path(out)
    for k in range(scenario.cohort.splits):
        fold = scenario.model_copy(update={"cohort": scenario.cohort.model_copy(update={"fold": k})})
        log.info("split %d of %d: %s", k + 1, scenario.cohort.splits, split_dir(out, k))
        run_simulated_study(fold, split_dir(out, k), **simulate)
    return combine_splits(scenario, out)


def merge_states(states: list[StudyState]) -> tuple[StudyState, list[str]]:
    """One state holding every split's test evaluations, patients renumbered per fold; and what was left out.

    A (model, site) evaluated in some splits only is left out of the merge
    (its patients would not line up), and named in the second return value.
    """
    first = states[0]
    sites = sorted(set.intersection(*(set(s.test_patients) for s in states)))
    dropped: list[str] = []
    evaluations: dict[str, dict[str, dict[str, list[float]]]] = {}
    for model in sorted(set().union(*(s.evaluations for s in states))):
        for site in sites:
            parts = [s.evaluations.get(model, {}).get(site) for s in states]
            if any(p is None for p in parts):
                if any(p is not None for p in parts):
                    dropped.append(f"{model} on {site}")
                continue
            evaluations.setdefault(model, {})[site] = {
                metric: [v for p in parts for v in p[metric]] for metric in parts[0]
                if all(metric in p for p in parts)}
    patients = {site: [PATIENTS_PER_FOLD * k + int(n) for k, s in enumerate(states) for n in s.test_patients[site]]
                for site in sites}
    wall: dict[str, float] = {}
    for s in states:
        for phase, sec in s.wall_seconds.items():
            wall[phase] = wall.get(phase, 0.0) + sec
    privacy = {(site if k == 0 else f"{site}@split{k}"): row
               for k, s in enumerate(states) for site, row in s.privacy.items()}
    rejected = {(site if k == 0 else f"{site}@split{k}"): why
                for k, s in enumerate(states) for site, why in s.rejected_bundles.items()}
    missing = {site: why for s in states for site, why in s.missing.items()}
    merged = first.model_copy(update={
        "evaluations": evaluations, "test_patients": patients, "wall_seconds": wall, "privacy": privacy,
        "rejected_bundles": rejected, "missing": missing, "bytes": merge_bytes(*(s.bytes for s in states)),
        "done": [p for p in first.done if all(p in s.done for s in states)]})
    return merged, dropped


def combine_splits(scenario: ScenarioConfig, out: Path) -> dict[str, Any]:
    """``out/report.json`` and ``report.html`` from every finished split under ``out``; returns the report's content.

    The verdicts are recomputed on all splits' test patients together (the
    patient the unit, seeds paired across splits); each split's own verdicts
    are kept under ``splits``.
    """
    import json

    from fedsynth.federation.pool import SyntheticPool
    from fedsynth.federation.study_report import build_report, write_study_report
    from fedsynth.report import validate_report

    out = Path(out)
    n = scenario.cohort.splits
    layouts = [StudyLayout(split_dir(out, k)) for k in range(n)]
    unfinished = [str(lay.out) for lay in layouts if not lay.report_json.is_file()]
    if unfinished:
        from fedsynth.errors import ConfigError

        raise ConfigError(f"cannot combine the splits: no report.json in {', '.join(unfinished)}")
    states = [StudyState.load(lay.state) for lay in layouts]
    merged, dropped = merge_states(states)
    spec = StudySpec(scenario=scenario, out=out, site_keys=layouts[0].registry)
    alive = sorted(merged.test_patients)
    report = build_report(spec, merged, alive, merged.missing).model_dump(mode="json", exclude_unset=True)
    own = [json.loads(lay.report_json.read_text(encoding="utf-8")) for lay in layouts]
    report["splits"] = [{"fold": k, "dir": lay.out.name, "machine": rep.get("machine"),
                         "patient_comparisons": rep.get("patient_comparisons", [])}
                        for k, (lay, rep) in enumerate(zip(layouts, own, strict=True))]
    report["notes"] = [
        f"{n} patient splits with disjoint test patients, each a whole study (generators retrained, own pool); "
        f"the verdicts use every split's test patients together (split k's patient n is {PATIENTS_PER_FOLD}k + n). "
        "Training curves, tuning and the closest pairs are split 0's; every split's are in its own report.",
        *(f"left out of the combined analysis (not evaluated in every split): {d}" for d in dropped),
        *report.get("notes", []),
    ]
    validate_report(report)
    write_study_report(StudyLayout(out), report, SyntheticPool(layouts[0].pool))
    return report
