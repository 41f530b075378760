"""Privacy-gate search speed and memory: faiss flat (exact) vs numpy brute force vs a per-pair loop.

The per-pair loop is how the paper this project builds on filtered images (all
pairs, one distance at a time); it is timed on a sample of pairs and
extrapolated. Every method is exact, and the script checks they agree.
Each row runs in a fresh process so the peak resident memory is its own.

    python benchmarks/gate.py            # default sizes (~3 min on 2 cores)
    python benchmarks/gate.py --refs 10000 --cands 1000
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import numpy as np


def _data(n_refs: int, n_cands: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    refs = gaussian_filter(rng.random((n_refs, size, size), dtype=np.float32), (0, 2, 2))
    cands = gaussian_filter(rng.random((n_cands, size, size), dtype=np.float32), (0, 2, 2))
    return refs, cands


def _job(method: str, metric: str, n_refs: int, n_cands: int, size: int, q: mp.Queue) -> None:
    from fedsynth.privacy import GateConfig
    from fedsynth.privacy.metrics import metric_spec
    from fedsynth.privacy.search import ReferenceIndex

    refs, cands = _data(n_refs, n_cands, size)
    cfg = GateConfig(mode="absolute", thresholds={metric: 0.0}, metrics=[metric])
    spec = metric_spec(metric, cfg)
    t0 = time.perf_counter()
    if method == "faiss flat (fedsynth)":
        index = ReferenceIndex(refs, cfg)
        dist, _ = index.search(metric, cands)
        seconds = time.perf_counter() - t0
    elif method == "bound-and-refine (ncc_prefilter=8), exact":
        index = ReferenceIndex(refs, cfg.model_copy(update={"ncc_prefilter": 8}))
        dist, _ = index.search(metric, cands)
        seconds = time.perf_counter() - t0
    elif method == "numpy brute force":
        emb = spec.embed_references(refs)
        dist = np.empty(n_cands)
        for i in range(0, n_cands, 8):
            qv = spec.embed_queries(cands[i : i + 8])
            if spec.inner_product:
                s = (qv @ emb.T).reshape(len(cands[i : i + 8]), spec.n_transforms, -1).max(axis=(1, 2))
                dist[i : i + 8] = 1 - s
            else:
                d2 = (qv**2).sum(1)[:, None] + (emb**2).sum(1)[None] - 2 * qv @ emb.T
                dist[i : i + 8] = np.sqrt(np.maximum(d2.min(1), 0) / emb.shape[1])
        seconds = time.perf_counter() - t0
    else:  # per-pair loop, sampled and extrapolated
        pairs = 0
        budget = 8.0
        i = 0
        dist = None
        while time.perf_counter() - t0 < budget:
            x, y = cands[i % n_cands], refs[(i * 7919) % n_refs]
            spec.exact_pair(x, y)
            pairs += 1
            i += 1
        seconds = (time.perf_counter() - t0) / pairs * n_refs * n_cands
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    q.put((seconds, rss, None if dist is None else np.asarray(dist)))


def run(method: str, metric: str, n_refs: int, n_cands: int, size: int) -> tuple[float, float, np.ndarray | None]:
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    p = ctx.Process(target=_job, args=(method, metric, n_refs, n_cands, size, q))
    p.start()
    out = q.get()
    p.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--refs", type=int, default=4000)
    ap.add_argument("--cands", type=int, default=400)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    args = ap.parse_args()
    print(f"{args.refs} references x {args.cands} candidates; ncc_robust = 4 flips x 81 shifts = 324 transforms\n")
    print("| metric | size | method | seconds | candidates/s | vs faiss | peak RSS MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for metric in ("pixel_rmse", "ncc_robust"):
        for size in args.sizes:
            n_c = args.cands if metric == "pixel_rmse" else max(20, args.cands // (4 if size > 64 else 2))
            base = None
            ref_dist = None
            methods = ["faiss flat (fedsynth)", "numpy brute force", "per-pair loop (paper), extrapolated"]
            if metric == "ncc_robust":  # the opt-in exact low-pass bound + refine scheme
                methods.insert(1, "bound-and-refine (ncc_prefilter=8), exact")
            for method in methods:
                sec, rss, dist = run(method, metric, args.refs, n_c, size)
                if base is None:
                    base, ref_dist = sec, dist
                elif dist is not None:
                    assert np.allclose(dist, ref_dist, atol=1e-4), "methods disagree"
                print(f"| {metric} | {size} | {method} | {sec:.2f} | {n_c / sec:.1f} | {sec / base:.1f}x | {rss:.0f} |",
                      flush=True)


if __name__ == "__main__":
    main()
