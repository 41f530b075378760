"""The privacy gate: publish a synthetic image only if no real patient image is near it.

The promise (``docs/privacy.md``): for every published image x and every real
training image y of the site, d_m(x, y) >= tau_m for every configured metric
m. The nearest y is found by exact search (:mod:`.search`); thresholds are
given or calibrated (:mod:`.calibration`). The gate fails closed: any error,
NaN/Inf, empty or malformed input raises :class:`~fedsynth.errors.GateError`
and nothing is returned to publish.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsynth.digests import array_digest
from fedsynth.errors import GateError
from fedsynth.privacy.calibration import calibrate
from fedsynth.privacy.certificate import FORMAT, AcceptanceMargin, Certificate, timestamp
from fedsynth.privacy.config import METRICS, GateConfig
from fedsynth.privacy.search import ReferenceIndex
from fedsynth.privacy.transforms import augment, describe, transform_grid
from fedsynth.progress import progress

__all__ = ["CheckResult", "GateResult", "PrivacyGate"]

# The accept rule's margin over the threshold: >> float32 search rounding, << any meaningful distance
# (a float32 sum of 4096 squares is within 2.4e-4 of the true value in the worst case).
_MARGIN = AcceptanceMargin(relative=1e-3, absolute=1e-6)

log = logging.getLogger(__name__)

_DEFINITIONS = {
    "pixel_rmse": "sqrt(mean((x - y)^2)) on [0, 1] intensities",
    "ncc_robust": "1 - max Pearson correlation over {id, hflip, vflip, both} x circular shifts |dy|,|dx| <= max_shift",
    "learned_copy": "1 - cosine similarity in the embedding of the site's copy detector (an encoder trained "
                    "self-supervised on the site's slices to embed edited copies close; recall measured, not proven)",
    "random_vgg_rmse": "RMSE of 1000 outputs of a random-init VGG-style net (paper parity; weak)",
}


@dataclass
class CheckResult:
    """Per candidate: certified nearest distance and nearest reference index per metric, and the decision."""

    distances: dict[str, np.ndarray]
    nearest: dict[str, np.ndarray]
    accepted: np.ndarray


@dataclass
class GateResult:
    """What :meth:`PrivacyGate.run` returns. Only ``accepted`` and ``certificate`` may leave the site."""

    accepted: np.ndarray
    certificate: Certificate
    audit: dict[str, Any]
    quota_met: bool
    acceptance_rate: float
    n_candidates: int
    #: the accepted candidates' companions (their untextured samples), in the same order; None without companions
    companions: np.ndarray | None = None


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    from fedsynth.data.slices import resize_stack

    return resize_stack(images, size)


def _as_stack(images: Any, what: str, size: int | None, shape: tuple[int, ...] | None = None) -> np.ndarray:
    arr = np.asarray(images)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3:
        raise GateError(f"{what}: expected an (N, H, W) stack, got shape {arr.shape}")
    if len(arr) == 0:
        raise GateError(f"{what}: empty")
    if arr.dtype.kind not in "fiu":
        raise GateError(f"{what}: expected numbers, got dtype {arr.dtype}")
    arr = np.asarray(arr, dtype=np.float32)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise GateError(f"{what}: {int(bad.any(axis=(1, 2)).sum())} image(s) contain NaN or Inf")
    if arr.min() < -1e-3 or arr.max() > 1 + 1e-3:
        raise GateError(f"{what}: values outside [0, 1] (min {arr.min():.3g}, max {arr.max():.3g}); normalise first")
    arr = np.clip(arr, 0.0, 1.0)
    if size is not None and arr.shape[1:] != (size, size):
        arr = _resize(arr, size)
    if shape is not None and arr.shape[1:] != shape:
        raise GateError(f"{what}: images are {arr.shape[1]}x{arr.shape[2]} but the references are "
                        f"{shape[0]}x{shape[1]}; set image_size to compare at one size")
    return np.ascontiguousarray(arr)


class PrivacyGate:
    """Exact, calibrated, fail-closed filter of synthetic images against one site's real training set."""

    def __init__(
        self,
        references: np.ndarray,
        cfg: GateConfig | None = None,
        reference_groups: np.ndarray | None = None,
        cache_dir: str | Path | None = None,
        detector: Any = None,
        holdout: np.ndarray | None = None,
    ) -> None:
        """``detector``: the site's copy detector (needed for ``learned_copy``); ``holdout``: slices of
        patients who are not in ``references`` (the site's validation patients), on which ``learned_copy``
        is calibrated — the detector was trained to push the references apart, so their distances to each
        other would overstate how far a new patient lands (measured: 32-79 % of new patients' slices flagged).
        """
        self.cfg = cfg or GateConfig()
        self.detector = detector  # learned_copy: the site's CopyDetector (fedsynth.privacy.copy_detector)
        self.holdout = holdout
        try:
            refs = _as_stack(references, "references", self.cfg.image_size)
            self.shape = refs.shape[1:]
            groups = None if reference_groups is None else np.asarray(reference_groups).astype(str)
            if groups is not None and len(groups) != len(refs):
                raise GateError(f"{len(groups)} patient ids for {len(refs)} references")
            #: the real slices as given (an audit's training side) and their patients
            self.references, self.reference_groups = refs, groups
            # the declared transform grid: every reference's variants join the searched set (exact over the grid)
            self.grid = transform_grid(self.cfg)
            refs = augment(refs, self.grid)
            self.groups = None if groups is None else np.repeat(groups, len(self.grid))
            cache = Path(cache_dir) if cache_dir is not None else None
            self.index = ReferenceIndex(refs, self.cfg, cache, detector, variants=len(self.grid))
            self.metrics: dict[str, dict[str, Any]] = {}
            for m in [m for m in METRICS if m in self.cfg.metrics]:
                self.metrics[m] = self._threshold(m, cache)
        except GateError:
            raise
        except Exception as err:  # noqa: BLE001 - fail closed, with the reason
            raise GateError(f"gate failed closed while indexing references: {type(err).__name__}: {err}") from err

    def _threshold(self, metric: str, cache: Path | None) -> dict[str, Any]:
        floor = self.cfg.thresholds.get(metric)  # type: ignore[call-overload]
        entry: dict[str, Any] = {"definition": _DEFINITIONS[metric] + describe(self.cfg), "mode": self.cfg.mode}
        if metric == "learned_copy":  # the spec refuses a missing detector (GateError)
            entry["detector"] = self.index.spec(metric).detector.describe()  # the weights that certified
        if self.cfg.mode == "absolute":
            entry["threshold"] = float(floor)  # type: ignore[arg-type]
            return entry
        if self.groups is None:
            raise GateError("calibrated thresholds need the patient id of every reference image "
                            "(or use absolute thresholds)")
        cal = (self._calibrate_on_holdout(metric) if metric == "learned_copy"
               else calibrate(self.index, self.groups, self.cfg, metric, cache))
        entry["calibration"] = cal
        entry["threshold"] = max(cal["value"], float(floor)) if floor is not None else cal["value"]
        if floor is not None:
            entry["floor"] = float(floor)
        return entry

    def _calibrate_on_holdout(self, metric: str) -> dict[str, Any]:
        """The ``percentile``-th percentile of held-out patients' nearest distances to the references."""
        if self.holdout is None or len(self.holdout) == 0:
            raise GateError(f"{metric} is calibrated on held-out patients' slices (the site's validation "
                            "patients); none were given")
        held = _as_stack(self.holdout, "held-out slices", self.cfg.image_size, self.shape)
        dist, _ = self.index.search(metric, held)
        value = float(np.percentile(dist, self.cfg.percentile))
        if not value > 0:
            raise GateError(f"calibration of {metric} gave a non-positive threshold ({value})")
        return {"method": "held-out patients' nearest distances to the references", "value": value,
                "percentile": self.cfg.percentile, "n_queries": int(len(held))}

    @property
    def thresholds(self) -> dict[str, float]:
        return {m: float(v["threshold"]) for m, v in self.metrics.items()}

    def check(self, candidates: np.ndarray) -> CheckResult:
        """Nearest real image of every candidate in every metric, and the accept decision.

        Fails closed like :meth:`run`: any error is a :class:`GateError`.
        """
        try:
            return self._check(candidates)
        except GateError:
            raise
        except Exception as err:  # noqa: BLE001 - fail closed, with the reason
            raise GateError(f"gate failed closed while checking candidates: {type(err).__name__}: {err}") from err

    def _check(self, candidates: np.ndarray) -> CheckResult:
        cands = _as_stack(candidates, "candidates", self.cfg.image_size, self.shape)
        accepted = np.ones(len(cands), dtype=bool)
        dists: dict[str, np.ndarray] = {}
        nearest: dict[str, np.ndarray] = {}
        for m, entry in self.metrics.items():
            found, idx = self.index.search(m, cands)
            exact = self.index.recheck(m, cands, idx)
            # Certify the smaller of the faiss and float64 values: conservative at float32 ties.
            d = np.minimum(found, exact)
            if not np.isfinite(d).all():
                raise GateError(f"{m}: a candidate has no finite nearest distance")
            dists[m], nearest[m] = d, idx
            # Accept only clear of the threshold by more than the search's float32 rounding can hide.
            accepted &= d >= _MARGIN.bar(entry["threshold"])
        return CheckResult(dists, nearest, accepted)

    def run(
        self,
        source: Callable[[int], Any],
        quota: int,
        max_attempts: int,
        generator_hash: str | None = None,
        show_progress: bool = False,
    ) -> GateResult:
        """Ask ``source(n)`` for candidates until ``quota`` pass or ``max_attempts`` candidates were drawn.

        ``source(n)`` returns an (n, H, W) stack, or a pair ``(candidates,
        companions)`` of equal shape: a candidate is then accepted only if its
        companion clears every threshold too (both distances are certified).
        With ``require_companions`` a source that returns a plain stack fails closed.
        """
        if quota < 1 or max_attempts < 1:
            raise GateError(f"quota and max_attempts must be >= 1 (got {quota}, {max_attempts})")
        try:
            return self._run(source, quota, max_attempts, generator_hash, show_progress)
        except GateError:
            raise
        except Exception as err:  # noqa: BLE001 - fail closed: nothing is published
            raise GateError(f"gate failed closed: {type(err).__name__}: {err}") from err

    def _split(self, batch: Any, what: str) -> tuple[np.ndarray | None, np.ndarray | None]:
        """A source's answer as (candidates, companions or None); None, None when it is exhausted."""
        comps = None
        if isinstance(batch, tuple):
            if len(batch) != 2:
                raise GateError(f"{what}: a source returns a stack or a (candidates, companions) pair")
            batch, comps = batch
        if batch is None or len(np.asarray(batch)) == 0:
            return None, None
        cands = _as_stack(batch, what, self.cfg.image_size, self.shape)
        if comps is None:
            if self.cfg.require_companions:
                raise GateError(f"{what}: require_companions is set but the source gave no companion images")
            return cands, None
        comps = _as_stack(comps, f"{what} (companions)", self.cfg.image_size, self.shape)
        if comps.shape != cands.shape:
            raise GateError(f"{what}: {len(comps)} companions of shape {comps.shape[1:]} for {len(cands)} "
                            f"candidates of shape {cands.shape[1:]}")
        return cands, comps

    def _audit_entry(self, res: CheckResult, i: int) -> dict[str, dict[str, Any]]:
        """Per metric: candidate ``i``'s certified distance, nearest reference and its patient (local audit only)."""
        return {m: {"distance": float(res.distances[m][i]), "reference_index": int(res.nearest[m][i]),
                    "patient_id": None if self.groups is None else str(self.groups[res.nearest[m][i]])}
                for m in self.metrics}

    def _run(self, source: Callable[[int], Any], quota: int, max_attempts: int,
             generator_hash: str | None, show_progress: bool) -> GateResult:
        kept: list[np.ndarray] = []
        kept_companions: list[np.ndarray] = []
        records: list[dict[str, Any]] = []
        audit: list[dict[str, Any]] = []
        drawn = 0
        bar = progress(total=quota, enabled=show_progress, desc="gate: accepted", unit="img")
        while len(kept) < quota and drawn < max_attempts:
            need = quota - len(kept)
            rate = len(kept) / drawn if drawn else 1.0
            ask = min(max_attempts - drawn, max(1, math.ceil(1.1 * need / max(rate, 0.05))))
            cands, comps = self._split(source(ask), f"candidate batch {len(records) // max(ask, 1) + 1}")
            if cands is None:
                log.warning("candidate source is exhausted after %d candidates", drawn)
                break
            cands = cands[: max_attempts - drawn]
            res = self.check(cands)
            comp = self.check(comps[: len(cands)]) if comps is not None else None
            for i in range(len(cands)):
                drawn += 1
                ok = bool(res.accepted[i]) and (comp is None or bool(comp.accepted[i]))
                rec: dict[str, Any] = {"index": drawn - 1, "accepted": ok,
                                       "nn_distance": {m: float(res.distances[m][i]) for m in self.metrics}}
                if comp is not None:
                    rec["nn_distance_companion"] = {m: float(comp.distances[m][i]) for m in self.metrics}
                if ok:
                    rec["digest"] = array_digest(cands[i])
                    kept.append(cands[i])
                    if comps is not None:  # certified with it, so it can be published as the untextured arm
                        rec["companion_digest"] = array_digest(comps[i])
                        kept_companions.append(comps[i])
                    bar.update(1)
                records.append(rec)
                audit.append({"index": drawn - 1, "accepted": ok, **self._audit_entry(res, i)})
                if comp is not None:
                    audit[-1]["companion"] = self._audit_entry(comp, i)
                if len(kept) >= quota:
                    break
        bar.close()
        accepted = np.stack(kept) if kept else np.zeros((0, *self.shape), np.float32)
        rate = len(kept) / drawn if drawn else 0.0
        quota_met = len(kept) >= quota
        if not quota_met:
            log.warning("gate: quota not met: %d of %d accepted after %d candidates (acceptance %.1f%%)",
                        len(kept), quota, drawn, 100 * rate)
        cert = self._certificate(records, quota, quota_met, rate, generator_hash)
        companions = np.stack(kept_companions) if kept_companions and len(kept_companions) == len(kept) else None
        return GateResult(accepted, cert, {"candidates": audit, "reference_fingerprint": self.index.fingerprint},
                          quota_met, rate, drawn, companions)

    def _certificate(self, records: list[dict[str, Any]], quota: int, quota_met: bool, rate: float,
                     generator_hash: str | None) -> Certificate:
        import fedsynth

        published = [r["digest"] for r in records if r["accepted"]]
        acc = [r for r in records if r["accepted"]]
        return Certificate(
            format=FORMAT,
            created=timestamp(),
            fedsynth_version=fedsynth.__version__,
            generator_hash=generator_hash,
            reference={
                "fingerprint": self.index.fingerprint,
                "n_images": int(len(self.references)),
                "n_searched": int(len(self.index.references)),  # with the transform grid's variants
                "n_patients": None if self.groups is None else int(len(np.unique(self.groups))),
                "image_shape": [int(s) for s in self.shape],
            },
            metrics=self.metrics,
            acceptance_margin=_MARGIN,
            companions={"required": self.cfg.require_companions,
                        "checked": any("nn_distance_companion" in r for r in records)},
            config=self.cfg.model_dump(mode="json"),  # every field, so the signed body states them all
            images=records,
            published=published,
            summary={
                "n_candidates": len(records),
                "n_published": len(published),
                "n_rejected": len(records) - len(published),
                "acceptance_rate": rate,
                "quota": quota,
                "quota_met": quota_met,
                "min_nearest_published": {m: min((r["nn_distance"][m] for r in acc), default=None)
                                          for m in self.metrics},
            },
        )
