"""Thresholds from the site's own data: how close do *other patients* come?

For each real training slice (a seeded subsample of at most
``calibration_max_queries``), the distance to the nearest slice of a
different patient is found by the same exact search the gate uses
(leave-one-patient-out). The ``percentile``-th percentile of those distances
is the threshold: a published image is then never closer to a patient's
slice than that patient's slices typically are to other patients.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from fedsynth.errors import GateError
from fedsynth.io_utils import write_json_atomic
from fedsynth.privacy.config import GateConfig
from fedsynth.privacy.search import ReferenceIndex

__all__ = ["calibrate"]

log = logging.getLogger(__name__)


def _key(index: ReferenceIndex, groups: np.ndarray, cfg: GateConfig, metric: str) -> str:
    h = hashlib.sha256()
    h.update(index.fingerprint.encode())
    h.update("\0".join(map(str, groups)).encode())
    h.update(json.dumps([index.cache_name(metric), cfg.percentile, cfg.max_shift, cfg.flips, cfg.calibration_max_queries,
                         cfg.seed, "ci-v2"]).encode())
    return h.hexdigest()[:24]


def calibrate(index: ReferenceIndex, groups: np.ndarray, cfg: GateConfig, metric: str,
              cache_dir: Path | None = None) -> dict[str, Any]:
    """Calibrated threshold of one metric, with what it was computed from (goes into the certificate)."""
    groups = np.asarray(groups).astype(str)
    if len(groups) != len(index.references):
        raise GateError(f"calibration: {len(groups)} patient ids for {len(index.references)} references")
    n_patients = len(np.unique(groups))
    if n_patients < 2:
        raise GateError("calibration needs reference images from at least 2 patients "
                        "(give patient ids, or use absolute thresholds)")
    path = Path(cache_dir) / f"calibration-{metric}-{_key(index, groups, cfg, metric)}.json" if cache_dir else None
    if path is not None and path.exists():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
    n = len(groups)
    rng = np.random.default_rng(cfg.seed)
    q = np.sort(rng.choice(n, size=min(n, cfg.calibration_max_queries), replace=False))
    dist, _ = index.search(metric, np.asarray(index.references[q]), query_groups=groups[q], reference_groups=groups)
    ok = np.isfinite(dist)
    dist, qgroups = dist[ok], groups[q][ok]
    if len(dist) == 0:
        raise GateError("calibration found no pair of slices from different patients")
    value = float(np.percentile(dist, cfg.percentile))
    # how much the threshold depends on which patients happened to be at this site: resample patients
    rng_b = np.random.default_rng(cfg.seed + 1)
    ids = np.unique(qgroups)
    rows = {p: dist[qgroups == p] for p in ids}
    boot = [float(np.percentile(np.concatenate([rows[p] for p in rng_b.choice(ids, len(ids))]), cfg.percentile))
            for _ in range(1000)]
    result = {
        "method": "leave-one-patient-out nearest distance",
        "percentile": cfg.percentile,
        "value": value,
        "n_queries": int(len(q)),
        "n_patients": int(n_patients),
        "quantiles": {str(p): float(np.percentile(dist, p)) for p in (1, 5, 25, 50)},
        "ci95_over_patients": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
    }
    log.info("calibrated %s: P%g of other-patient nearest distances = %.4f (%d queries, %d patients)",
             metric, cfg.percentile, value, len(q), n_patients)
    if path is not None:
        write_json_atomic(path, result)
    return result
