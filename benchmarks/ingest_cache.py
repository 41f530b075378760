"""Cost of a slice-store cache hit: the stat index vs hashing every volume.

A site opens its slice store (:func:`fedsynth.data.ingest_site`) at the start
of every federated run and every ``fedsynth site`` command, and nearly every
call is a cache hit. Before ``out/ingest-index.json`` a hit
hashed the bytes of every volume to find its store; now a hit recognises
unchanged files by name, patient id, size and mtime. This script times both
on one site of the default study's cohort (8 patients x 24 slices, 64x64 CT):

- ``stat index``: ``ingest_site`` itself, on a warm cache.
- ``content hash``: the obvious alternative (what a hit did before): list the
  volumes, SHA-256 every byte of every volume, open the store.

Both run on files in the page cache (the usual case for a daemon), so the
content hash is CPU time only; on a cold disk it also reads every volume.

    python benchmarks/ingest_cache.py [--repeats 50] [--patients 8]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fedsynth.data import discover_volumes, ingest_site, open_store
from fedsynth.data.cohort import make_cohort
from fedsynth.digests import update_from_file


def _median_ms(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--patients", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        vols = make_cohort("ct", 1, args.patients, root / "cohort", slices=24, size=64, seed=0,
                           progress_bar=False)
        site, out = root / "cohort" / "site-1", root / "cache"
        # Volumes modified in the last 2 s are never trusted by their stat; wait that out.
        newest = max(p.stat().st_mtime for p in vols)
        time.sleep(max(0.0, newest + 2.1 - time.time()))
        t0 = time.perf_counter()
        store = ingest_site(site, "ct", out, size=64, progress=False)
        build_ms = (time.perf_counter() - t0) * 1e3

        def stat_index() -> None:
            assert ingest_site(site, "ct", out, size=64, progress=False).path == store.path

        def content_hash() -> None:
            h = hashlib.sha256()
            for path, pid in discover_volumes(site):
                h.update(f"{path.name}\0{pid}\0".encode())
                update_from_file(h, path)
            open_store(store.path)

        stat_index(), content_hash()  # warm both paths
        fast = _median_ms(stat_index, args.repeats)
        slow = _median_ms(content_hash, args.repeats)
        mib = sum(p.stat().st_size for p in vols) / 2**20
        print(f"site: {len(vols)} volumes, {mib:.2f} MiB on disk, {len(store)} slices of 64x64; "
              f"first ingest (build) {build_ms:.0f} ms; {args.repeats} repeats")
        print()
        print("| cache hit | median ms | min ms | vs stat index |")
        print("| --- | ---: | ---: | ---: |")
        print(f"| stat index (`ingest_site`) | {fast[0]:.2f} | {fast[1]:.2f} | 1.0x |")
        ratio = slow[0] / fast[0]
        print(f"| content hash of every volume | {slow[0]:.2f} | {slow[1]:.2f} | {ratio:.1f}x |")


if __name__ == "__main__":
    main()
