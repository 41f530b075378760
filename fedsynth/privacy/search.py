"""Exact nearest-real-image search, batched and sharded so memory stays bounded.

Exact means that the reported nearest reference is the true one (up to
float32 rounding, which is re-checked in float64), never an approximation:

``pixel_rmse`` (and ``random_vgg_rmse``)
    faiss ``IndexFlatL2`` (a brute-force matrix product) over shards of
    ``reference_shard`` references; the best ``k`` of each shard are
    re-computed in float64 and the smallest kept, so float32 cancellation in
    ``|x|^2 + |y|^2 - 2 x.y`` cannot pick the wrong neighbour.

``ncc_robust``
    max over 324 transforms T of <T z_x, z_y> on standardised images. The
    default (``ncc_prefilter = 0``) is a faiss ``IndexFlatIP`` search with
    the 324 transformed candidates as queries, 324x the work of one flat
    search. ``ncc_prefilter = K > 0`` selects an exact *bound-and-refine*
    scheme (measured: not faster than faiss on this CPU, see
    docs/privacy.md; kept as an exact, tested option):

    1. P = orthogonal projection onto the low spatial frequencies
       (|k_y|, |k_x| <= K). Circular shifts and flips map that frequency set
       onto itself, so P commutes with every T, and by Cauchy-Schwarz
       ``<T z_x, z_y> <= <T P z_x, P z_y> + |(1-P) z_x| |(1-P) z_y|``.
       In a real Fourier basis P z is a short vector (2(2K+1)(K+1) numbers
       instead of H*W) and a shift is a phase rotation of it, so the bound
       for all 324 transforms and all references is one small matrix product.
    2. For each candidate, references are visited in decreasing order of
       their bound (chunks growing 16, 64, 256, ...). A reference whose bound
       is not above the best exact value found so far is skipped; the rest get
       the same bound with 2K frequencies (tighter), and only those still
       above it are re-checked exactly (all 324 transforms, full resolution).
       The visit stops at the first chunk whose bounds are all below the best
       exact value. Bounds carry +1e-4 slack for float32 rounding, so every
       skipped reference provably cannot be nearer.

    For smooth medical slices most references are pruned by the bound; for
    white noise the bound is loose: once more than 20 % of the references
    survive it for a candidate, they are all checked in large contiguous
    blocks, so the scheme degrades to about the exhaustive search's cost.
    K (``ncc_prefilter``) is given for 64x64 and scaled with the image size.

Leave-one-patient-out queries (the calibration) pass ``query_groups`` and
``reference_groups``: references of the query's own group are excluded.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from fedsynth.io_utils import atomic_write
from fedsynth.privacy.config import GateConfig
from fedsynth.privacy.metrics import MetricSpec, metric_spec, transformed

__all__ = ["ReferenceIndex", "fingerprint", "lowpass_embedding", "lowpass_transformed"]

log = logging.getLogger(__name__)

_BOUND_SLACK = 1e-4  # float32 rounding of the bound is far below this
_REFINE_CHUNK = 16
_DENSE_FRACTION = 0.2  # above this share of surviving references, refine in large blocks


def fingerprint(images: np.ndarray) -> str:
    """sha256 of the reference set (shape + float32 bytes): binds certificates to the data they were checked against."""
    h = hashlib.sha256(repr(tuple(images.shape)).encode())
    for i in range(0, len(images), 1024):
        h.update(np.ascontiguousarray(images[i : i + 1024], dtype="<f4").tobytes())
    return h.hexdigest()


def _freqs(h: int, w: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signed row frequencies, column frequencies and Parseval weights of the kept rfft2 bins."""
    k = min(k, (h - 1) // 2, (w - 1) // 2)
    ky = np.r_[np.arange(0, k + 1), np.arange(-k, 0)]
    kx = np.arange(0, k + 1)
    weight = np.where(kx == 0, 1.0, 2.0)  # kx > 0 bins stand for themselves and their conjugate
    return ky, kx, np.broadcast_to(weight, (len(ky), len(kx)))


def lowpass_embedding(z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Standardised (N, H, W) → (P z as real vectors (N, d), residual norms |(1-P) z| (N,)).

    ``<a, b> = sum w/(HW) Re(A conj B)`` over the kept bins equals the inner
    product of the low-passed images (Parseval), so the rows of the
    embedding have exactly the low-passed images' inner products.
    """
    n, h, w = z.shape
    ky, kx, weight = _freqs(h, w, k)
    f = np.fft.rfft2(np.asarray(z, np.float64))[:, ky[:, None] % h, kx[None, :]]
    scale = np.sqrt(weight / (h * w))
    emb = np.concatenate([(f.real * scale).reshape(n, -1), (f.imag * scale).reshape(n, -1)], axis=1)
    total = np.einsum("nhw,nhw->n", np.asarray(z, np.float64), np.asarray(z, np.float64))
    resid = np.sqrt(np.maximum(total - np.einsum("nd,nd->n", emb, emb), 0.0))
    return emb.astype(np.float32), resid.astype(np.float32)


def lowpass_transformed(z: np.ndarray, k: int, max_shift: int, flips: bool) -> np.ndarray:
    """(B, H, W) standardised → (B, T, d): low-pass embedding of every flip × circular shift.

    Same transform order as :func:`fedsynth.privacy.metrics.transformed` (the
    order is irrelevant for the max, the set is what matters).
    """
    b, h, w = z.shape
    ky, kx, weight = _freqs(h, w, k)
    variants = [z]
    if flips:
        variants += [z[:, :, ::-1], z[:, ::-1, :], z[:, ::-1, ::-1]]
    s = np.arange(-max_shift, max_shift + 1)
    # Rolling by (dy, dx) multiplies bin (ky, kx) by exp(-2πi (ky dy / H + kx dx / W)).
    sy, sx = np.meshgrid(s, s, indexing="ij")
    phase = np.exp(-2j * np.pi * (sy.reshape(-1, 1, 1) * ky[None, :, None] / h
                                  + sx.reshape(-1, 1, 1) * kx[None, None, :] / w)).astype(np.complex64)
    scale = np.sqrt(weight / (h * w))
    out = []
    for v in variants:
        f = (np.fft.rfft2(np.asarray(v, np.float64))[:, ky[:, None] % h, kx[None, :]] * scale).astype(np.complex64)
        g = f[:, None] * phase[None]  # (B, S, ky, kx)
        out.append(np.concatenate([g.real.reshape(b, len(phase), -1), g.imag.reshape(b, len(phase), -1)], axis=2))
    return np.concatenate(out, axis=1).astype(np.float32)


class ReferenceIndex:
    """The site's real training images, embedded once per metric, searchable exactly.

    ``cache_dir``: embeddings are stored as ``<cache_dir>/refs-<fp16>/<name>.npy``
    and memory-mapped on later use, so a site builds its index once.
    """

    def __init__(self, references: np.ndarray, cfg: GateConfig, cache_dir: Path | None = None) -> None:
        self.references = references
        self.cfg = cfg
        self.fingerprint = fingerprint(references)
        self.cache = Path(cache_dir) / f"refs-{self.fingerprint[:16]}" if cache_dir else None
        self._emb: dict[str, np.ndarray] = {}

    def spec(self, metric: str) -> MetricSpec:
        return metric_spec(metric, self.cfg)

    def _cached(self, name: str, build: object) -> np.ndarray:
        if name in self._emb:
            return self._emb[name]
        path = self.cache / f"{name}.npy" if self.cache else None
        emb: np.ndarray | None = None
        if path is not None and path.exists():
            try:
                emb = np.load(path, mmap_mode="r")
                if emb.shape[0] != len(self.references):
                    emb = None
            except (OSError, ValueError):
                emb = None
        if emb is None:
            emb = np.ascontiguousarray(build(), dtype=np.float32)  # type: ignore[operator]
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_write(path) as fh:
                    np.save(fh, emb, allow_pickle=False)
        self._emb[name] = emb
        return emb

    def embedded(self, metric: str) -> np.ndarray:
        """(N, D) float32 reference embedding of ``metric`` (cached)."""
        spec = self.spec(metric)

        def build() -> np.ndarray:
            return np.concatenate([spec.embed_references(np.asarray(self.references[i : i + 4096], np.float32))
                                   for i in range(0, len(self.references), 4096)])

        return self._cached(metric, build)

    def _lowpass(self, k: int) -> np.ndarray:
        """(N, d + 1): low-pass (|k| <= ``k``) embedding of the standardised references, residual norm last."""
        z = self.embedded("ncc_robust")
        shape = self.references.shape[1:]

        def build() -> np.ndarray:
            parts = []
            for i in range(0, len(z), 4096):
                emb, res = lowpass_embedding(np.asarray(z[i : i + 4096]).reshape(-1, *shape), k)
                parts.append(np.concatenate([emb, res[:, None]], axis=1))
            return np.concatenate(parts)

        return self._cached(f"ncc_robust-lowpass{k}", build)

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
        if metric == "ncc_robust" and self.cfg.ncc_prefilter > 0:
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
        return dist, best_idx

    def _search_ncc_pruned(self, queries: np.ndarray, query_groups: np.ndarray | None,
                           reference_groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Exact ``ncc_robust`` nearest neighbour by low-pass upper bound + exact refinement."""
        from fedsynth.privacy.metrics import standardise

        cfg = self.cfg
        spec = self.spec("ncc_robust")
        z_ref = self.embedded("ncc_robust")
        h, w = queries.shape[1:]
        # ncc_prefilter is given for 64x64 slices; the same smoothness in pixels has proportionally more
        # frequencies at a larger size, so K scales with the image.
        k1 = max(1, round(cfg.ncc_prefilter * min(h, w) / 64))
        k2 = 2 * k1
        low = self._lowpass(k1)
        low2 = self._lowpass(k2)
        n, d1 = low.shape
        t = spec.n_transforms
        shard = min(cfg.reference_shard, n)
        batch = max(1, int(cfg.memory_mb * 2**20 // (4 * (t * (shard + d1) + n + 2 * t * h * w))))
        best = np.full(len(queries), -np.inf)
        best_idx = np.full(len(queries), -1, dtype=np.int64)
        n_exact = 0
        for q0 in range(0, len(queries), batch):
            zq = standardise(queries[q0 : q0 + batch]).reshape(-1, h, w)
            b = len(zq)
            _, res = lowpass_embedding(zq, k1)
            _, res2 = lowpass_embedding(zq, k2)
            qt = lowpass_transformed(zq, k1, cfg.max_shift, cfg.flips)  # (b, T, d)
            qt = np.concatenate([qt, np.broadcast_to(res[:, None, None], (b, t, 1))], axis=2).reshape(b * t, d1)
            bound = np.empty((b, n), dtype=np.float32)
            for s0 in range(0, n, shard):
                blk = np.ascontiguousarray(low[s0 : s0 + shard])
                bound[:, s0 : s0 + len(blk)] = (qt @ blk.T).reshape(b, t, len(blk)).max(axis=1)
            bound += _BOUND_SLACK
            if query_groups is not None:
                bound[query_groups[q0 : q0 + b, None] == reference_groups[None, :]] = -np.inf
            order = np.argsort(-bound, axis=1, kind="stable")
            # Second, tighter bound (4x the frequencies) on the references the first could not prune.
            qt2 = lowpass_transformed(zq, k2, cfg.max_shift, cfg.flips)
            qt2 = np.concatenate([qt2, np.broadcast_to(res2[:, None, None], (b, t, 1))], axis=2)
            for i in range(b):
                zt: np.ndarray | None = None
                top, top_idx = -np.inf, -1
                p, chunk = 0, _REFINE_CHUNK
                while p < n:
                    idx = order[i, p : p + chunk]
                    p, chunk = p + len(idx), min(4 * chunk, 1024)
                    idx = idx[bound[i, idx] > top]
                    if len(idx) == 0:
                        break
                    if zt is not None and (bound[i] > top).sum() > _DENSE_FRACTION * n:
                        # The bound prunes too little for this candidate (rough texture): check every
                        # reference still above it in large blocks, as the exhaustive search would.
                        # Contiguous blocks (no gather copy); excluded references keep a -inf bound.
                        for r0 in range(0, n, 2048):
                            exact = (zt @ np.asarray(z_ref[r0 : r0 + 2048]).T).max(axis=0)
                            exact[~np.isfinite(bound[i, r0 : r0 + len(exact)])] = -np.inf
                            n_exact += len(exact)
                            j = int(np.argmax(exact))
                            if exact[j] > top:
                                top, top_idx = float(exact[j]), r0 + j
                        break
                    idx = np.sort(idx)
                    b2 = (qt2[i] @ np.asarray(low2[idx]).T).max(axis=0) + _BOUND_SLACK
                    idx = idx[b2 > top]
                    if len(idx) == 0:
                        continue
                    if zt is None:
                        zt = transformed(zq[i : i + 1], cfg.max_shift, cfg.flips).reshape(t, h * w)
                    exact = (zt @ np.asarray(z_ref[idx]).T).max(axis=0)
                    n_exact += len(idx)
                    j = int(np.argmax(exact))
                    if exact[j] > top:
                        top, top_idx = float(exact[j]), int(idx[j])
                best[q0 + i], best_idx[q0 + i] = top, top_idx
        log.debug("ncc_robust: %d exact pair checks for %d queries x %d references (%.1f%%)",
                  n_exact, len(queries), n, 100 * n_exact / max(1, len(queries) * n))
        self.last_exact_fraction = n_exact / max(1, len(queries) * n)
        dist = np.where(best_idx >= 0, spec.to_distance(best, h * w), np.inf)
        return dist, best_idx

    def recheck(self, metric: str, queries: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Float64 distance of each query to its found nearest reference (the certified value)."""
        spec = self.spec(metric)
        out = np.empty(len(queries), dtype=np.float64)
        for i, j in enumerate(idx):
            out[i] = spec.exact_pair(queries[i], np.asarray(self.references[j])) if j >= 0 else np.inf
        return out
