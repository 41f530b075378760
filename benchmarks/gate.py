"""Privacy-gate search speed and memory: fedsynth's pruned exact search vs faiss flat vs numpy vs a per-pair loop.

Data: CT slices of the bundled cohort's generator (seeded; many patients, so
the references look like a large site's training set), normalised to [0, 1].
Candidates are slices of *other* patients plus 5 % planted near-copies of
references (flipped, shifted by 1-4 px, intensity-rescaled): the workload of
the gate (synthetic images near the training distribution) and of its
calibration (other-patient nearest distances).

Methods, all exact, checked to agree with each other in every run:

* ``fedsynth pruned`` — the gate's default (``GateConfig.search = "pruned"``):
  provable bounds for every pair, exact re-check of the pairs they allow.
  The per-site reference embeddings are built once and cached by the gate;
  their build time is reported separately ("index build").
* ``faiss flat`` — ``GateConfig.search = "flat"``: exhaustive faiss search.
* ``numpy brute force`` — |x|^2 + |y|^2 - 2 x.y by matrix products over
  query blocks of 256 (for ncc_robust: the 324 transformed candidates as rows).
* ``per-pair loop (paper)`` — one distance at a time, as the paper this
  project builds on filtered its images; timed for a few seconds and
  extrapolated to all pairs.

Slow exhaustive methods are timed on a subset of candidates and extrapolated
(marked "extrap."). Each method runs in a fresh process, so the peak resident
memory is its own (it includes the reference set itself).

    python benchmarks/gate.py                       # 10k refs x 2k candidates at 64 and 128, + 100k x 10k at 64
    python benchmarks/gate.py --quick               # 2k x 200 at 64 only (~1 min)
    python benchmarks/gate.py --adversarial         # inputs that defeat the bounds: pruned vs dense exact search

Adversarial inputs: random fields (white noise smoothed by a Gaussian of sigma
0, 1, 2 px; references and candidates alike) have no anatomy for the bounds to
exploit. There the pruned search must fall back to its dense exact path and
stay within 2x of the dense exact search of the same transform set
(``numpy brute force`` above), measured in the same run.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

CACHE = Path(tempfile.gettempdir()) / "fedsynth-gate-bench"


def _ct_slices(n: int, size: int, seed: int) -> np.ndarray:
    """``n`` CT slices (size x size, [0, 1]) from the cohort generator: 32 slices per patient, 3 scanners."""
    import fedsynth.data.cohort as cohort
    from fedsynth.data.normalise import hu_to_window

    out = []
    for p in range((n + 31) // 32):
        site = p % 3 + 1
        scanner = cohort.site_scanners("ct", site, seed)[site - 1]
        rng = np.random.default_rng([seed, site, p])
        mix = scanner.patient_mix + float(rng.normal(0, 0.5))
        img = cohort.render_ct_patient(cohort.sample_ct_patient(rng, mix), 32, size, scanner.fov)
        out.append(hu_to_window(cohort.apply_ct_scanner(img, scanner, rng)).astype(np.float32))
    return np.concatenate(out)[:n]


def dataset(n_refs: int, n_cands: int, size: int) -> tuple[Path, Path]:
    """Cached .npy paths (references, candidates) for this size."""
    CACHE.mkdir(parents=True, exist_ok=True)
    ref_path, cand_path = CACHE / f"refs-{n_refs}-{size}.npy", CACHE / f"cands-{n_refs}-{n_cands}-{size}.npy"
    if not (ref_path.exists() and cand_path.exists()):
        refs = _ct_slices(n_refs, size, seed=0)
        cands = _ct_slices(n_cands, size, seed=1)  # other patients
        rng = np.random.default_rng(2)
        planted = rng.choice(n_cands, size=max(1, n_cands // 20), replace=False)
        for i in planted:
            y = refs[rng.integers(n_refs)]
            y = np.roll(y, tuple(rng.integers(-4, 5, size=2)), (0, 1))
            y = y[:, ::-1] if rng.random() < 0.5 else y
            cands[i] = np.clip(rng.uniform(0.8, 1.2) * y + rng.uniform(-0.05, 0.05), 0, 1)
        np.save(ref_path, refs)
        np.save(cand_path, cands)
    return ref_path, cand_path


def _job(method: str, metric: str, ref_path: str, cand_path: str, n_cands: int, q: mp.Queue) -> None:
    from fedsynth.privacy import GateConfig
    from fedsynth.privacy.metrics import metric_spec
    from fedsynth.privacy.search import ReferenceIndex

    refs = np.load(ref_path)
    cands = np.load(cand_path)[:n_cands]
    cfg = GateConfig(mode="absolute", thresholds={metric: 1e-6}, metrics=[metric])  # search only: threshold unused
    spec = metric_spec(metric, cfg)
    build = 0.0
    extra = ""
    dist = None
    if method in ("fedsynth pruned", "faiss flat"):
        index = ReferenceIndex(refs, cfg.model_copy(update={"search": "pruned" if "pruned" in method else "flat"}))
        t0 = time.perf_counter()
        index.search(metric, cands[:1])  # builds (and would cache) the reference embeddings
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        dist, _ = index.search(metric, cands)
        seconds = time.perf_counter() - t0
        if hasattr(index, "last_exact_fraction"):
            extra = f"{100 * index.last_exact_fraction:.2f}%"
    elif method == "numpy brute force":
        t0 = time.perf_counter()
        emb = spec.embed_references(refs)
        en = (emb**2).sum(1) if not spec.inner_product else None  # float32 throughout, like the pruned search
        dist = np.empty(n_cands)
        step = 256 if not spec.inner_product else 4
        for i in range(0, n_cands, step):
            qv = spec.embed_queries(cands[i : i + step])
            if spec.inner_product:
                s = (qv @ emb.T).reshape(len(cands[i : i + step]), spec.n_transforms, -1).max(axis=(1, 2))
                dist[i : i + step] = 1 - s
            else:
                d2 = (qv**2).sum(1)[:, None] + en[None] - 2 * (qv @ emb.T)
                dist[i : i + step] = np.sqrt(np.maximum(d2.min(1), 0) / emb.shape[1])
        seconds = time.perf_counter() - t0
    else:  # per-pair loop, sampled and extrapolated
        t0 = time.perf_counter()
        pairs, i = 0, 0
        while time.perf_counter() - t0 < 5.0:
            spec.exact_pair(cands[i % n_cands], refs[(i * 7919) % len(refs)])
            pairs, i = pairs + 1, i + 1
        seconds = (time.perf_counter() - t0) / pairs * len(refs) * n_cands
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    q.put((seconds, build, rss, extra, None if dist is None else np.asarray(dist)))


def adversarial_dataset(n_refs: int, n_cands: int, size: int, sigma: float) -> tuple[Path, Path]:
    """Cached random fields: white noise smoothed with a Gaussian of ``sigma`` px, min-max scaled to [0, 1]."""
    from scipy.ndimage import gaussian_filter

    CACHE.mkdir(parents=True, exist_ok=True)
    paths = (CACHE / f"adv-refs-{n_refs}-{size}-{sigma:g}.npy", CACHE / f"adv-cands-{n_cands}-{size}-{sigma:g}.npy")
    rng = np.random.default_rng([3, int(10 * sigma)])
    for path, n in zip(paths, (n_refs, n_cands), strict=True):
        if not path.exists():
            x = rng.standard_normal((n, size, size)).astype(np.float32)
            if sigma:
                x = gaussian_filter(x, sigma=(0, sigma, sigma), mode="wrap")
            x -= x.min(axis=(1, 2), keepdims=True)
            x /= x.max(axis=(1, 2), keepdims=True)
            np.save(path, x.astype(np.float32))
    return paths


def adversarial_table(n_refs: int, n_cands: int, size: int) -> list[tuple[str, float, float]]:
    """Pruned vs dense exact search on random fields; rows printed, returns (label, search ratio, with build)."""
    out = []
    for sigma in (0.0, 1.0, 2.0):
        paths = adversarial_dataset(n_refs, n_cands, size, sigma)
        for metric in ("pixel_rmse", "ncc_robust"):
            # Dense ncc_robust is 324 products per pair: both methods are timed on the same 100 candidates.
            part = n_cands if metric == "pixel_rmse" else min(n_cands, 100)
            rows = {}
            for method in ("fedsynth pruned", "numpy brute force"):
                sec, build, rss, extra, dist = run(method, metric, paths, part)
                rows[method] = (sec * n_cands / part, build, rss, extra, dist)
            (tp, bp, _, _, dp), (td, _, _, _, dd) = rows["fedsynth pruned"], rows["numpy brute force"]
            assert np.allclose(dp, dd, rtol=1e-4, atol=1e-5), "pruned and dense disagree"
            note = "" if part == n_cands else " (extrap.)"
            label = f"{metric}, sigma {sigma:g}"
            for method, (t, b, r, x, _) in rows.items():
                print(f"| {metric} | random field, sigma {sigma:g} px | {n_refs:,} x {n_cands:,} | {method} "
                      f"| {t:.2f}{note} | {b:.2f} | {n_refs * n_cands / t / 1e6:.1f} | {t / tp:.1f}x | {x} | {r:.0f} |",
                      flush=True)
            out.append((label, tp / td, (tp + bp) / td))
    return out


def run(method: str, metric: str, paths: tuple[Path, Path], n_cands: int) -> tuple[float, float, float, str, np.ndarray | None]:
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    p = ctx.Process(target=_job, args=(method, metric, str(paths[0]), str(paths[1]), n_cands, q))
    p.start()
    out = q.get()
    p.join()
    return out


def table(n_refs: int, n_cands: int, size: int, metrics: list[str]) -> list[tuple[str, float]]:
    """Print the rows for one (references x candidates x size) setting; return (metric, pruned seconds)."""
    paths = dataset(n_refs, n_cands, size)
    pruned_times = []
    for metric in metrics:
        # Exhaustive ncc_robust is 324 flat searches: time it on a subset of candidates (~2e12 multiply-adds,
        # about 10 s here) and extrapolate.
        budget = int(2e12 / (n_refs * size * size * 324))
        part = int(np.clip(budget, 10, max(10, n_cands // 40))) if metric == "ncc_robust" else n_cands
        subset = {"fedsynth pruned": n_cands, "faiss flat": part, "numpy brute force": part,
                  "per-pair loop (paper)": n_cands}
        base = None
        dists: dict[str, np.ndarray] = {}
        for method, n_c in subset.items():
            sec, build, rss, extra, dist = run(method, metric, paths, n_c)
            total = sec * n_cands / n_c
            note = "" if n_c == n_cands and method != "per-pair loop (paper)" else " (extrap.)"
            if base is None:
                base = total
                pruned_times.append((metric, total))
            if dist is not None:
                dists[method] = dist
                first = dists["fedsynth pruned"][: len(dist)]
                assert np.allclose(dist, first, rtol=1e-4, atol=1e-5), f"{method} disagrees with fedsynth pruned"
            pairs = n_refs * n_cands
            print(f"| {metric} | {size} | {n_refs:,} x {n_cands:,} | {method} | {total:.2f}{note} | "
                  f"{build:.2f} | {pairs / total / 1e6:.1f} | {total / base:.1f}x | {extra} | {rss:.0f} |", flush=True)
    return pruned_times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2k references x 200 candidates at 64x64 only")
    ap.add_argument("--skip-scaling", action="store_true", help="leave out the 100k x 10k row")
    ap.add_argument("--scaling-size", type=int, default=64, choices=[32, 64], help="image size of the 100k x 10k row")
    ap.add_argument("--only", choices=["64", "128", "scaling"], help="run one setting only")
    ap.add_argument("--adversarial", action="store_true",
                    help="only the adversarial block: random fields, 10k refs x 1k candidates at 64, pruned vs dense")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores; "
          f"ncc_robust = 4 flips x 81 shifts = 324 transforms\n")
    print("| metric | size | refs x candidates | method | search s | index build s | M pairs/s | vs pruned "
          "| exact re-checks | peak RSS MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    if args.adversarial:
        ratios_adv = adversarial_table(10_000, 1000, 64)
        print()
        for label, r, rb in ratios_adv:
            print(f"{label}: pruned / dense exact search {r:.2f}x (with the index build {rb:.2f}x); target <= 2x")
        return
    settings = [(2000, 200, 64)] if args.quick else [(10_000, 2000, 64), (10_000, 2000, 128)]
    if not args.quick and not args.skip_scaling:
        settings.append((100_000, 10_000, args.scaling_size))
    if args.only:
        settings = [s for s in settings if (args.only == "scaling") == (s[0] == 100_000) and
                    (args.only == "scaling" or str(s[2]) == args.only)]
    ratios = []
    for n_refs, n_cands, size in settings:
        times = dict(table(n_refs, n_cands, size, ["pixel_rmse", "ncc_robust"]))
        ratios.append((size, n_refs, n_cands, times["ncc_robust"] / times["pixel_rmse"]))
    print()
    for size, n_refs, n_cands, r in ratios:
        print(f"ncc_robust / pixel_rmse search time (fedsynth pruned), {n_refs:,} x {n_cands:,} at {size}: {r:.1f}x")


if __name__ == "__main__":
    main()
