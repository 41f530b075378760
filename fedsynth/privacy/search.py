"""Exact nearest-real-image search, batched and sharded so memory stays bounded.

Exact means that the reported nearest reference is the true one (up to
float32 rounding, re-checked in float64), never an approximation. Two
strategies, chosen by ``GateConfig.search``:

``pruned`` (default): bound, then refine
    A cheap provable bound (:mod:`fedsynth.privacy.bounds`) is computed for
    every (candidate, reference) pair as one matrix product; a reference is
    re-checked at full resolution only if its bound says it *could* beat the
    best exact distance found so far, visiting references in bound order.

    * ``pixel_rmse``: lower bound from the low spatial frequencies plus the
      norm of the rest (651 numbers per 64x64 image instead of 4096), searched
      with a faiss flat index. The 4 references with the smallest bound are
      checked exactly; a candidate is done when the 4th-smallest bound is not
      below the best exact distance, otherwise 64 deeper hits, then (rarely)
      the whole bound row, are checked wherever the bound is under the best.
      When the bound cannot prune (rough or noise-like references: more than
      10 % of their variance outside the bound's band, checked up front on a
      sample; or a candidate whose whole bound row admits more than 30 % of
      the references), the search is dense instead: one float32 GEMM gives every squared distance
      up to a proven rounding margin, and only references within that margin
      of the best are re-checked exactly (``_dense_pixel``). The pruned
      search is then never much slower than brute force.
    * ``ncc_robust``: a cascade of spectral upper bounds on the correlation
      maximised over all 324 flips x shifts: first a shift-invariant bound
      from Fourier magnitudes (two inner products per pair, all pairs), then
      for the survivors bounds with more and more of the phase, and finally
      the exact 324-transform correlation. Rough (noise-like) images defeat
      the bounds; a candidate for which more than 30 % of the references
      survive the first bound is checked against all of them in contiguous
      blocks, as the flat search would.

    Bounds carry slack for float32 rounding (1e-4 for correlations, relative
    1e-6 for squared distances), so a reference is only ever skipped when it
    provably cannot be nearer.

``flat``: exhaustive faiss search
    ``IndexFlatL2`` / ``IndexFlatIP`` over shards of ``reference_shard``
    references (for ``ncc_robust`` with the 324 transformed candidates as
    queries: 324x the work of one flat search); the best ``k`` of each shard
    are re-computed in float64 for L2. ``random_vgg_rmse`` always uses it.

Leave-one-patient-out queries (the calibration) pass ``query_groups`` and
``reference_groups``: references of the query's own group are excluded.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from fedsynth.digests import array_digest
from fedsynth.io_utils import atomic_write
from fedsynth.privacy.bounds import (
    QueryParts,
    SpectralStage,
    exact_correlation,
    flip_spectra,
    magnitude_band,
    ncc_stages,
    pixel_bound_rows,
    pixel_frequencies,
    spectra,
)
from fedsynth.privacy.config import GateConfig
from fedsynth.privacy.metrics import MetricSpec, metric_spec, standardise, transformed

__all__ = ["ReferenceIndex"]

log = logging.getLogger(__name__)

_NCC_SLACK = 1e-4  # absolute, on correlations in [-1, 1]: float32 rounding of the bounds is far below it
_L2_SLACK = 1e-4  # relative to |x|^2 + |y|^2: float32 storage and float32 faiss arithmetic of the pooled bound
_PIXEL_FIRST = 4  # references checked exactly before the bound decides whether more are needed (measured best)
_NCC_FIRST = 4
_EXACT_CHUNK = 8
_DENSE_FRACTION = 0.3  # above this share of surviving references, refine everything in contiguous blocks
# Above this median share of a reference's variance outside the pixel bound's band, skip the bound (speed only:
# measured 0.1 % for random fields smoothed by 2 px, 3-4 % for CT slices, 16 % at 1 px, 85 % for white noise).
_WEAK_LOWPASS = 0.1


def _workers() -> int:
    """Cores this process may use (the affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class ReferenceIndex:
    """The site's real training images, embedded once per metric, searchable exactly.

    ``cache_dir``: embeddings are stored as ``<cache_dir>/refs-<fp16>/<name>.npy``
    and memory-mapped on later use, so a site builds its index once.
    """

    def __init__(self, references: np.ndarray, cfg: GateConfig, cache_dir: Path | None = None,
                 detector: Any = None, variants: int = 1) -> None:
        """``variants``: references come in consecutive runs of this many transform-grid variants of one real
        slice (variant 0 the slice itself); ``learned_copy`` searches the real slices only — the detector is
        trained to be invariant to such edits, and its search over the variants flagged 17-33 % of new
        patients' slices instead of 6 % (measured)."""
        self.references = references
        self.cfg = cfg
        self.detector = detector  # learned_copy's encoder (fedsynth.privacy.copy_detector)
        self.variants = int(variants)
        self.fingerprint = array_digest(references)  # binds certificates to the data checked against
        self.cache = Path(cache_dir) / f"refs-{self.fingerprint[:16]}" if cache_dir else None
        self._emb: dict[str, np.ndarray] = {}
        self._norms: np.ndarray | None = None  # squared reference norms (the dense pixel path)
        self._weak: bool | None = None  # the pixel bound's band misses most of the references' variance

    def spec(self, metric: str) -> MetricSpec:
        return metric_spec(metric, self.cfg, self.detector)

    def cache_name(self, metric: str) -> str:
        """The metric's embedding name: a learned metric's names its detector (another detector, other rows)."""
        if metric == "learned_copy" and self.detector is not None:
            return f"{metric}-{self.detector.fingerprint[:16]}-s{self.variants}"
        return metric

    def _cached(self, name: str, build: Callable[[], np.ndarray], rows: int | None = None) -> np.ndarray:
        """``rows``: how many rows a valid cached file has (default: one per reference)."""
        rows = len(self.references) if rows is None else rows
        if name in self._emb:
            return self._emb[name]
        path = self.cache / f"{name}.npy" if self.cache else None
        emb: np.ndarray | None = None
        if path is not None and path.exists():
            try:
                emb = np.load(path, mmap_mode="r")
                if emb.shape[0] != rows:
                    emb = None
            except (OSError, ValueError):
                emb = None
        if emb is None:
            emb = np.ascontiguousarray(build(), dtype=np.float32)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_write(path) as fh:
                    np.save(fh, emb, allow_pickle=False)
        self._emb[name] = emb
        return emb

    def _stride(self, metric: str) -> int:
        """Rows of the reference set a metric searches: every one, or (``learned_copy``) variant 0 of each."""
        return self.variants if metric == "learned_copy" else 1

    def embedded(self, metric: str) -> np.ndarray:
        """(N / stride, D) float32 reference embedding of ``metric`` (cached)."""
        spec = self.spec(metric)
        refs = self.references[:: self._stride(metric)]

        def build() -> np.ndarray:
            return np.concatenate([spec.embed_references(np.asarray(refs[i : i + 4096], np.float32))
                                   for i in range(0, len(refs), 4096)])

        return self._cached(self.cache_name(metric), build, len(refs))

    def search(
        self,
        metric: str,
        queries: np.ndarray,
        query_groups: np.ndarray | None = None,
        reference_groups: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Nearest reference of every query: ``(distance float64 (B,), index int64 (B,))``.

        With groups, references of the query's own group are excluded (the
        leave-one-patient-out calibration); a query with no admissible
        reference gets distance inf and index -1.
        """
        if query_groups is not None:
            if reference_groups is None:
                raise ValueError("query_groups needs reference_groups")
            query_groups = np.asarray(query_groups).astype(str)
            reference_groups = np.asarray(reference_groups).astype(str)
        queries = np.asarray(queries, np.float32)
        if self.cfg.search == "pruned" and metric == "pixel_rmse":
            return self._search_pixel_pruned(queries, query_groups, reference_groups)
        if self.cfg.search == "pruned" and metric == "ncc_robust":
            return self._search_ncc_pruned(queries, query_groups, reference_groups)
        return self._search_flat(metric, queries, query_groups, reference_groups)

    def _search_flat(self, metric: str, queries: np.ndarray, query_groups: np.ndarray | None,
                     reference_groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Exhaustive faiss flat search (IndexFlatL2 / IndexFlatIP over all transforms)."""
        import faiss

        spec = self.spec(metric)
        emb = self.embedded(metric)
        n, dim = emb.shape
        t = spec.n_transforms
        stride = self._stride(metric)
        if stride > 1 and reference_groups is not None:
            reference_groups = reference_groups[::stride]
        k = 1 if spec.inner_product else 8
        if query_groups is not None:
            _, counts = np.unique(reference_groups, return_counts=True)
            k = int(counts.max()) + k
        b = len(queries)
        worst = -np.inf if spec.inner_product else np.inf
        best = np.full(b, worst, dtype=np.float64)
        best_idx = np.full(b, -1, dtype=np.int64)
        per_query = t * (dim * 4 * 2 + k * 12) + (0 if spec.inner_product else k * dim * 8)
        batch = max(1, int(self.cfg.memory_mb * 2**20 // per_query))
        shard = self.cfg.reference_shard
        for s0 in range(0, n, shard):
            block = np.ascontiguousarray(emb[s0 : s0 + shard], dtype=np.float32)
            index = faiss.IndexFlatIP(dim) if spec.inner_product else faiss.IndexFlatL2(dim)
            index.add(block)
            kk = min(k, len(block))
            for q0 in range(0, b, batch):
                qb = queries[q0 : q0 + batch]
                scores, ids = index.search(spec.embed_queries(qb), kk)  # (len(qb) * t, kk)
                valid = ids >= 0
                if query_groups is not None:
                    qg = np.repeat(query_groups[q0 : q0 + batch], t)
                    valid &= reference_groups[np.where(valid, ids + s0, 0)] != qg[:, None]
                scores = scores.astype(np.float64)
                if not spec.inner_product:
                    # Re-compute the k best in float64: faiss's |x|^2+|y|^2-2xy loses digits for near-copies.
                    qe = spec.embed_queries(qb).astype(np.float64)
                    diff = qe[:, None, :] - block[np.where(valid, ids, 0)].astype(np.float64)
                    scores = np.einsum("qkd,qkd->qk", diff, diff)
                scores = np.where(valid, scores, worst)
                col = np.argmax(scores, axis=1) if spec.inner_product else np.argmin(scores, axis=1)
                row_best = scores[np.arange(len(scores)), col].reshape(len(qb), t)
                row_idx = ids[np.arange(len(ids)), col].reshape(len(qb), t) + s0
                tcol = np.argmax(row_best, axis=1) if spec.inner_product else np.argmin(row_best, axis=1)
                cand = row_best[np.arange(len(qb)), tcol]
                cand_idx = row_idx[np.arange(len(qb)), tcol]
                sl = slice(q0, q0 + len(qb))
                better = cand > best[sl] if spec.inner_product else cand < best[sl]
                best[sl] = np.where(better, cand, best[sl])
                best_idx[sl] = np.where(better, cand_idx, best_idx[sl])
        dist = np.where(best_idx >= 0, spec.to_distance(best, dim), np.inf)
        return dist, np.where(best_idx >= 0, best_idx * stride, best_idx)

    def _rows(self, name: str, source: np.ndarray, shape: tuple[int, int],
              embed: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Cached per-reference bound rows, built in chunks of 4096 images."""
        def build() -> np.ndarray:
            return np.concatenate([embed(np.asarray(source[i : i + 4096], np.float32).reshape(-1, *shape))
                                   for i in range(0, len(source), 4096)])

        return self._cached(name, build)

    @staticmethod
    def _excluded(query_groups: np.ndarray | None, reference_groups: np.ndarray | None,
                  sl: slice) -> np.ndarray | None:
        if query_groups is None or reference_groups is None:
            return None
        return query_groups[sl, None] == reference_groups[None, :]

    def _search_pixel_pruned(self, queries: np.ndarray, query_groups: np.ndarray | None,
                             reference_groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Exact ``pixel_rmse`` nearest neighbour: low-pass lower bound, exact check of the few references it allows.

        Rounds of growing depth: faiss finds, per candidate, the ``_PIXEL_FIRST``
        references with the smallest bound (no candidates x references matrix
        is materialised); those are checked exactly (float32 differences). A
        candidate is settled when the deepest hit's bound is not below its
        best exact distance: no other reference can be nearer. Unsettled
        candidates get 16x deeper hits, then, if still unsettled, their whole
        bound row; every reference whose bound is under the best distance is
        checked, smallest bound first.
        """
        import faiss

        n, h, w = self.references.shape
        kf = pixel_frequencies(h, w)
        if self._lowpass_is_weak(kf):
            # Most of the references' variation lies outside the bound's band (noise-like images): the
            # bound could not prune, so do not even build it; the dense exact path answers directly.
            top, top_idx, checked = self._dense_pixel(
                queries.reshape(len(queries), -1), np.full(len(queries), np.inf),
                np.full(len(queries), -1, dtype=np.int64), query_groups, reference_groups)
            self.last_exact_fraction = checked / max(1, len(queries) * n)
            return np.where(top_idx >= 0, np.sqrt(np.maximum(top, 0.0) / (h * w)), np.inf), top_idx
        emb = np.ascontiguousarray(
            self._rows(f"pixel_rmse-lowpass{kf}", self.references, (h, w), lambda x: pixel_bound_rows(x, kf)))
        en = np.einsum("nd,nd->n", emb.astype(np.float64), emb.astype(np.float64))
        en_loose = ((1.0 - _L2_SLACK) * en).astype(np.float32)
        index = faiss.IndexFlatL2(emb.shape[1])
        index.add(emb)
        refs = self.references.reshape(n, h * w)
        extra = 0
        if query_groups is not None:  # the query's own group may fill the first hits: ask for that many more
            extra = int(np.unique(reference_groups, return_counts=True)[1].max())
        k = min(_PIXEL_FIRST + extra, n)
        batch = int(np.clip(self.cfg.memory_mb * 2**20 // (8 * k * h * w + 64 * k), 1, 4096))

        def hits(qe: np.ndarray, qen: np.ndarray, groups: np.ndarray | None, depth: int) -> tuple[np.ndarray, ...]:
            """faiss's ``depth`` smallest bounds: (safe bounds (B, depth) with excluded = inf, ids, safe bound of the deepest)."""
            raw, sel = index.search(qe.astype(np.float32), depth)
            # faiss's float32 |x|^2 + |y|^2 - 2xy: subtract a rounding margin so the bound stays a lower bound.
            lb = raw.astype(np.float64) - _L2_SLACK * (qen[:, None] + en[np.maximum(sel, 0)]) - 1e-9
            deepest = lb[:, -1].copy() if depth < n else np.full(len(lb), np.inf)
            valid = sel >= 0
            if groups is not None:
                valid &= reference_groups[np.maximum(sel, 0)] != groups[:, None]
            lb[~valid] = np.inf
            return lb, np.maximum(sel, 0), deepest

        best = np.full(len(queries), np.inf)
        best_idx = np.full(len(queries), -1, dtype=np.int64)
        n_exact = 0
        for q0 in range(0, len(queries), batch):
            sl = slice(q0, q0 + batch)
            groups = query_groups[sl] if query_groups is not None else None
            qb = queries[sl].reshape(-1, h * w)
            qe = pixel_bound_rows(queries[sl], kf).astype(np.float64)
            qen = np.einsum("nd,nd->n", qe, qe)
            lb, sel, deepest = hits(qe, qen, groups, k)
            # Float32 differences (no cancellation: the squares of the differences are summed directly);
            # the pair finally chosen is re-computed in float64 by the gate (``recheck``).
            exact = np.full(sel.shape, np.inf)
            for c0 in range(0, len(qb), 64):
                diff = qb[c0 : c0 + 64, None, :] - refs[sel[c0 : c0 + 64]]
                exact[c0 : c0 + 64] = np.einsum("qkd,qkd->qk", diff, diff)
            exact[~np.isfinite(lb)] = np.inf
            n_exact += int(np.isfinite(lb).sum())
            rows = np.arange(len(qb))
            j = np.argmin(exact, axis=1)
            top, top_idx = exact[rows, j], np.where(np.isfinite(exact[rows, j]), sel[rows, j], -1)
            unsettled = np.flatnonzero(deepest < top)
            if len(unsettled) and k < n:  # round 2: deeper hits for the few the first ones did not settle
                depth = min(n, 16 * k)
                lb2, sel2, deepest2 = hits(qe[unsettled], qen[unsettled],
                                           groups[unsettled] if groups is not None else None, depth)
                still = []
                for r, i in enumerate(unsettled):
                    fresh = ~np.isin(sel2[r], sel[i]) & (lb2[r] < top[i])
                    top[i], top_idx[i], checked = self._refine_pixel(qb[i], sel2[r][fresh], lb2[r][fresh],
                                                                      top[i], top_idx[i])
                    n_exact += checked
                    if deepest2[r] < top[i]:
                        still.append(i)
                unsettled = np.asarray(still, dtype=np.int64)
            # Round 3: the whole bound row (float32 product, same rounding margin) for whatever is left.
            per = max(1, int(self.cfg.memory_mb * 2**20 // (8 * n)))
            for u0 in range(0, len(unsettled), per):
                part = unsettled[u0 : u0 + per]
                full = qe[part].astype(np.float32) @ emb.T
                full *= -2.0
                full += en_loose[None, :]
                full += ((1.0 - _L2_SLACK) * qen[part] - 1e-9).astype(np.float32)[:, None]
                if query_groups is not None:
                    full[groups[part, None] == reference_groups[None, :]] = np.inf
                dense = []
                for r, i in enumerate(part):
                    cand = np.flatnonzero(full[r] < top[i])
                    if len(cand) > _DENSE_FRACTION * n:
                        dense.append(i)
                        continue
                    cand = cand[np.argsort(full[r, cand], kind="stable")]
                    top[i], top_idx[i], checked = self._refine_pixel(qb[i], cand, full[r, cand], top[i], top_idx[i])
                    n_exact += checked
                if dense:
                    d = np.asarray(dense)
                    top[d], top_idx[d], checked = self._dense_pixel(
                        qb[d], top[d], top_idx[d], groups[d] if groups is not None else None, reference_groups)
                    n_exact += checked
            best[sl], best_idx[sl] = top, top_idx
        self.last_exact_fraction = n_exact / max(1, len(queries) * n)
        log.debug("pixel_rmse: exact checks for %.2f%% of %d x %d pairs", 100 * self.last_exact_fraction,
                  len(queries), n)
        return np.where(best_idx >= 0, np.sqrt(np.maximum(best, 0.0) / (h * w)), np.inf), best_idx

    def _dense_pixel(self, qb: np.ndarray, top: np.ndarray, top_idx: np.ndarray, groups: np.ndarray | None,
                     reference_groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, int]:
        """Exact nearest squared distance of each row of ``qb`` (B, D) by dense GEMM, then a margin re-check.

        ``|q|^2 + |r|^2 - 2 q.r`` in float32 is off from the true squared
        distance by at most a margin (twice the worst-case float32 rounding
        of a D-term dot product plus the additions: (D + 16) 2^-23 (|q|^2 +
        |r|^2)), so ``estimate -
        margin`` is a lower bound and ``estimate + margin`` an upper bound of
        every pair's distance. A reference is re-checked exactly (float32
        differences, as elsewhere) only when its lower bound is under the best
        upper bound; for generic data that is a handful per candidate. Returns
        updated ``(top, top_idx, exact checks)``.
        """
        refs = self.references.reshape(len(self.references), -1)
        n, d = refs.shape
        rn = self._ref_norms()
        top, top_idx = top.copy(), top_idx.copy()
        qn = np.einsum("bd,bd->b", qb.astype(np.float64), qb.astype(np.float64)).astype(np.float32)
        # Worst-case float32 rounding, relative to |q|^2 + |r|^2 (u = 2^-24): the D-term dot product in any
        # summation order (2 |q.r| D u <= D u (|q|^2 + |r|^2)), the norms' casts and the additions (< 8 u);
        # doubled for safety.
        eps = np.float32((d + 16) * 2.0**-23)
        rows = int(np.clip(self.cfg.memory_mb * 2**20 // (12 * n), 1, 256))
        checked = 0
        for b0 in range(0, len(qb), rows):
            q = qb[b0 : b0 + rows]
            est = q @ refs.T  # (b, n) float32 GEMM: the dense path's one big product
            est *= -2.0
            scale = qn[b0 : b0 + rows, None] + rn[None, :]
            est += scale  # the estimated squared distances
            scale *= eps  # their rounding margin
            lb = est - scale
            ub = est + scale
            if groups is not None:
                own = groups[b0 : b0 + rows, None] == reference_groups[None, :]
                lb[own] = np.inf
                ub[own] = np.inf
            best_ub = ub.min(axis=1)
            for r in range(len(q)):
                i = b0 + r
                cand = np.flatnonzero(lb[r] < min(top[i], best_ub[r]))
                cand = cand[np.argsort(lb[r, cand], kind="stable")]
                top[i], top_idx[i], c = self._refine_pixel(q[r], cand, lb[r, cand].astype(np.float64), top[i],
                                                            top_idx[i])
                checked += c
        return top, top_idx, checked

    def _lowpass_is_weak(self, kf: int, sample: int = 256) -> bool:
        """True when over 10 % of a typical reference's variance lies outside the pixel bound's band.

        The low-pass bound sees only the in-band part of a difference; when
        most of the images' variation is outside it (white or fine noise), it
        cannot rule references out and building it is wasted. Decided on a
        fixed, evenly spaced sample of the references (deterministic, cached).
        """
        if self._weak is None:
            from fedsynth.privacy.bounds import spectra, spectral_residual

            n, h, w = self.references.shape
            pick = np.unique(np.linspace(0, n - 1, min(n, sample)).round().astype(int))
            x = np.asarray(self.references[pick], np.float32)
            centred = x - x.mean(axis=(1, 2), keepdims=True)
            var = np.einsum("nij,nij->n", centred.astype(np.float64), centred.astype(np.float64))
            outside = spectral_residual(spectra(centred), h, w, kf) ** 2  # Parseval: pixel-domain energy
            share = np.median(outside / np.maximum(var, 1e-12))
            self._weak = bool(share > _WEAK_LOWPASS)
        return self._weak

    def _ref_norms(self) -> np.ndarray:
        """Squared norms of the references (float32 of a float64 sum; computed once per index)."""
        if self._norms is None:
            refs = self.references.reshape(len(self.references), -1)
            norms = np.empty(len(refs))
            for i in range(0, len(refs), 256):  # cache-sized float64 copies (5x faster than whole blocks)
                part = np.asarray(refs[i : i + 256], np.float64)
                norms[i : i + 256] = np.einsum("nd,nd->n", part, part)
            self._norms = norms.astype(np.float32)
        return self._norms

    def _refine_pixel(self, q: np.ndarray, cand: np.ndarray, lb: np.ndarray, top: float,
                      top_idx: int) -> tuple[float, int, int]:
        """Check ``cand`` (sorted by their lower bounds ``lb``) exactly while a bound is still under ``top``."""
        refs = self.references.reshape(len(self.references), -1)
        checked = 0
        for c0 in range(0, len(cand), 64):
            c, b = cand[c0 : c0 + 64], lb[c0 : c0 + 64]
            c = np.sort(c[b < top])
            if len(c) == 0:
                break  # sorted: every later bound is larger still
            diff = q - refs[c]
            d2 = np.einsum("kd,kd->k", diff, diff).astype(np.float64)
            checked += len(c)
            j = int(np.argmin(d2))
            if d2[j] < top:
                top, top_idx = float(d2[j]), int(c[j])
        return top, top_idx, checked

    def _search_ncc_pruned(self, queries: np.ndarray, query_groups: np.ndarray | None,
                           reference_groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Exact ``ncc_robust`` nearest neighbour by a cascade of spectral upper bounds + exact refinement."""
        cfg = self.cfg
        spec = self.spec("ncc_robust")
        n, h, w = self.references.shape
        z_ref = self.embedded("ncc_robust")
        stages = ncc_stages(h, w)
        widths = [s.phase_dim + magnitude_band(np.zeros((1, h, w // 2 + 1), np.complex64), h, w, s.kp, s.km).shape[1] + 1
                  for s in stages]
        edges = np.cumsum([0, *widths])
        # One cached array holds every stage's rows (one FFT per reference builds them all).
        all_rows = self._rows(
            "ncc_robust-bounds-" + "-".join(f"{s.kp}.{s.km}" for s in stages), z_ref, (h, w),
            lambda z: np.concatenate([s.reference_rows(spec) for spec in [spectra(z)] for s in stages], axis=1))
        rows = [all_rows[:, edges[k] : edges[k + 1]] for k in range(len(stages))]
        first_rows = np.ascontiguousarray(rows[0])
        batch = int(np.clip(cfg.memory_mb * 2**20 // (12 * n), 1, 512))
        best = np.full(len(queries), -np.inf)
        best_idx = np.full(len(queries), -1, dtype=np.int64)
        n_exact = 0
        for q0 in range(0, len(queries), batch):
            sl = slice(q0, q0 + batch)
            zq = standardise(queries[sl]).reshape(-1, h, w)
            _, mag, res = stages[0].query_parts(flip_spectra(zq, cfg.flips), cfg.max_shift)
            # First bound, all pairs: shift-invariant magnitudes (one product per magnitude variant).
            u = np.max([mag[:, v] @ first_rows[:, :-1].T for v in range(mag.shape[1])], axis=0)
            u += res[:, None] * first_rows[None, :, -1] + _NCC_SLACK
            excluded = self._excluded(query_groups, reference_groups, sl)
            if excluded is not None:
                u[excluded] = -np.inf
            # Refinement is many small products: multi-threaded BLAS only adds hand-off cost to them, so each
            # candidate runs single-threaded and the cores take different candidates.
            with threadpool_limits(1), ThreadPoolExecutor(_workers()) as pool:
                jobs = pool.map(self._refine_ncc, (zq[i : i + 1] for i in range(len(zq))), u,
                                repeat(stages), repeat(rows), repeat(z_ref))
                for i, (top, top_idx, checked) in enumerate(jobs):
                    n_exact += checked
                    best[q0 + i], best_idx[q0 + i] = top, top_idx
        self.last_exact_fraction = n_exact / max(1, len(queries) * n)
        log.debug("ncc_robust: exact checks for %.2f%% of %d x %d pairs", 100 * self.last_exact_fraction,
                  len(queries), n)
        return np.where(best_idx >= 0, spec.to_distance(best, h * w), np.inf), best_idx

    def _refine_ncc(self, zq: np.ndarray, u: np.ndarray, stages: list[SpectralStage], rows: list[np.ndarray],
                    z_ref: np.ndarray) -> tuple[float, int, int]:
        """Best correlation of one standardised query (1, H, W) given its first-stage bounds ``u`` (N,)."""
        cfg = self.cfg
        n = len(u)
        t = self.spec("ncc_robust").n_transforms
        top, top_idx, checked = -np.inf, -1, 0
        first = min(_NCC_FIRST, n)
        head = np.argpartition(-u, first - 1)[:first] if first < n else np.arange(n)
        head = np.sort(head[np.isfinite(u[head])])
        parts: dict[int, QueryParts] = {}
        variants = flip_spectra(zq, cfg.flips)
        for phase in ("head", "rest"):
            if phase == "head":
                cand = head
            else:
                alive = u > top
                alive[head] = False
                cand = np.flatnonzero(alive)
            bound = u[cand]  # cand is sorted by index (contiguous-ish gathers); bounds follow it
            for k, stage in enumerate(stages[1:], start=1):
                keep = bound > top
                cand, bound = cand[keep], bound[keep]
                if len(cand) == 0:
                    break
                if k >= 2 and len(cand) > _DENSE_FRACTION * n:
                    # The bounds prune too little for this candidate (rough texture): check every reference
                    # still in play in contiguous blocks, as the exhaustive search would.
                    alive = np.zeros(n, dtype=bool)
                    alive[cand] = True
                    zt = transformed(zq, cfg.max_shift, cfg.flips).reshape(t, -1)
                    for r0 in range(0, n, 2048):
                        exact = (zt @ np.asarray(z_ref[r0 : r0 + 2048]).T).max(axis=0)
                        exact[~alive[r0 : r0 + 2048]] = -np.inf
                        checked += int(alive[r0 : r0 + 2048].sum())
                        j = int(np.argmax(exact))
                        if exact[j] > top:
                            top, top_idx = float(exact[j]), r0 + j
                    cand, bound = cand[:0], bound[:0]
                    break
                if k not in parts:
                    parts[k] = stage.query_parts(variants, cfg.max_shift)
                bound = stage.bound(parts[k], 0, np.asarray(rows[k][cand])) + _NCC_SLACK  # cand stays sorted
            keep = bound > top
            cand, bound = cand[keep], bound[keep]
            order = np.argsort(-bound, kind="stable")
            cand, bound = cand[order], bound[order]
            for c0 in range(0, len(cand), _EXACT_CHUNK):
                c, b = cand[c0 : c0 + _EXACT_CHUNK], bound[c0 : c0 + _EXACT_CHUNK]
                c = np.sort(c[b > top])
                if len(c) == 0:
                    break  # sorted: every later bound is lower still
                exact = exact_correlation(variants, np.asarray(z_ref[c]).reshape(-1, *zq.shape[1:]), cfg.max_shift)
                checked += len(c)
                j = int(np.argmax(exact))
                if exact[j] > top:
                    top, top_idx = float(exact[j]), int(c[j])
        return top, top_idx, checked

    def recheck(self, metric: str, queries: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Float64 distance of each query to its found nearest reference (the certified value)."""
        spec = self.spec(metric)
        out = np.empty(len(queries), dtype=np.float64)
        for i, j in enumerate(idx):
            out[i] = spec.exact_pair(queries[i], np.asarray(self.references[j])) if j >= 0 else np.inf
        return out
