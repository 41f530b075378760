"""Write the measured tables of the docs from the committed reports in docs/results/.

Why a script: the numbers a page quotes must come from a committed report that
anyone can re-check, never typed by hand. Blocks (between ``<!-- NAME:begin -->``
and ``<!-- NAME:end -->`` markers):

* ``generator-fidelity`` in docs/generative.md: every ``docs/results/generator_fidelity_*.json``
  (``benchmarks/generator_fidelity.py``) as one table;
* ``generator-speed`` in docs/benchmarks.md: ``docs/results/generator_speed.json``
  (``benchmarks/generator_speed.py``).

``--check`` exits 1 when a page is out of date (the test suite runs it).

    python benchmarks/render_docs.py           # rewrite the blocks
    python benchmarks/render_docs.py --check   # are the pages in sync with the reports?
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"


def _f(v: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if v is None else fmt.format(v)


def _row(key: str, r: dict[str, Any]) -> str:
    label, split, site = key.split("/")
    v = r["task_value"]
    gaps = v.get("gaps", {})
    rep = gaps.get("representation", {})
    rep_txt = "exact (0)" if rep.get("exact") else _f(rep.get("psnr"), "{:+.2f}")
    recon = r.get("reconstruction")
    t, speed = r["training"], r["speed"]
    steps = t["optimizer_steps"]
    steps_txt = (f"{steps['autoencoder']:,} + {steps['diffusion']:,}" if steps["autoencoder"]
                 else f"{steps['diffusion']:,}")
    ns = r["noise_spectrum"]["samples"]["ratio"]
    floor = r["noise_spectrum"].get("real_val_vs_train", {}).get("ratio")
    ts = r.get("two_sample", {})
    if "synthetic_vs_real" in ts:
        sv, rr = ts["synthetic_vs_real"], ts["real_vs_real"]
        inside = rr["ci95"][0] <= sv["auc"] <= rr["ci95"][1]
        auc = f"{sv['auc']:.2f} − {rr['auc']:.2f} = {sv['auc'] - rr['auc']:+.2f}{'' if not inside else ' (in floor CI)'}"
    else:
        auc = "skipped"
    return (f"| {label} | {split.replace('split-', '')} | {site} | {r['generator']['kind']} | {steps_txt} | "
            f"{t['train_seconds']:.0f} s, {speed['train_images_per_second']:.0f} img/s @ "
            f"{speed['conv_probe_gflops']:.0f} GFLOP/s | {t['stopped']} | "
            f"{_f(recon and recon['psnr'])} | {v['input']['psnr']:.2f} | {v['sets']['real']['psnr']:.2f} | "
            f"{rep_txt} | {_f(gaps.get('samples', {}).get('psnr'), '{:+.2f}')} | "
            f"{_f(gaps.get('companions', {}).get('psnr'), '{:+.2f}')} | "
            f"{' / '.join(f'{x:.2f}' for x in ns)} | {' / '.join(f'{x:.2f}' for x in floor) if floor else '–'} | "
            f"{auc} |")


def render_fidelity(results: Path = RESULTS) -> str:
    """The generator-fidelity tables, one per report in ``results``."""
    parts = [""]
    for path in sorted(results.glob("generator_fidelity_*.json")):
        rep = json.loads(path.read_text(encoding="utf-8"))
        n_seeds = {s["task_value"]["seeds"] for s in rep["sites"].values()}
        parts += [f"**{rep['scenario']}** (`{path.relative_to(ROOT)}`, updated {rep.get('updated', '?')}; "
                  f"task network trained {'/'.join(map(str, sorted(n_seeds)))} time(s) per set, validation "
                  "patients only; PSNR in dB):", "",
                  "| generator | split | site | kind | optimiser steps | training | stopped by | recon. PSNR | "
                  "input | trained on real | representation gap | samples gap | companions gap | "
                  "noise power, samples / real, 4 bands (low → high) | the same, real validation / training "
                  "patients | two-sample AUC − floor |",
                  "| --- | ---: | --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- "
                  "| --- |"]
        parts += [_row(k, r) for k, r in sorted(rep["sites"].items())]
        parts.append("")
        grids = [(k, r["grid"]) for k, r in sorted(rep["sites"].items()) if r.get("grid")]
        if grids:
            parts += ["Each generator's samples (top) above their nearest real training slice (bottom, exact pixel-RMSE "
                      "search, the distance under each):", ""]
            parts += [f"![{k}: samples above their nearest real training slices]"
                      f"({Path(g).relative_to('docs').as_posix()})" for k, g in grids]
            parts.append("")
    return "\n".join(parts)


def render_speed(results: Path = RESULTS) -> str:
    """The generator-speed table of ``generator_speed.json`` (empty when there is none)."""
    path = results / "generator_speed.json"
    if not path.is_file():
        return "\n"
    rep = json.loads(path.read_text(encoding="utf-8"))
    lines = ["", f"`python benchmarks/generator_speed.py --report {path.relative_to(ROOT)}` ({rep['measured']}, "
             f"{rep['seconds_per_case']:.0f} s of training per case after warm-up, each case in a fresh process; conv "
             f"probe {rep['conv_probe_gflops']:.1f} GFLOP/s, the mean of "
             f"{' and '.join(f'{p:.1f}' for p in rep['probes'])} before and after):", "",
             "| network | setting | images/s | × plain | forward GFLOP / image | effective GFLOP/s | share of the "
             "conv probe | warm-up s |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rep["rows"]:
        lines.append(f"| {r['network']} | {r['setting']} | {r['images_per_second']:.1f} | {r['ratio']:.2f} | "
                     f"{r['forward_gflop_per_image']:.3f} | {r['effective_gflops']:.1f} | {r['probe_share']:.0%} | "
                     f"{r['warmup_seconds']:.1f} |")
    return "\n".join(lines) + "\n"


#: block name -> (page, renderer)
BLOCKS = {"generator-fidelity": (ROOT / "docs" / "generative.md", render_fidelity),
          "generator-speed": (ROOT / "docs" / "benchmarks.md", render_speed)}


def rendered(page: Path) -> str:
    """``page`` with every block of it re-rendered; ValueError when a block's markers are missing."""
    text = page.read_text(encoding="utf-8")
    for name, (where, fn) in BLOCKS.items():
        if where != page:
            continue
        begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        if begin not in text or end not in text:
            raise ValueError(f"{page}: markers {begin} / {end} missing")
        text = text[: text.index(begin) + len(begin)] + fn() + text[text.index(end):]
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a page is out of date")
    args = ap.parse_args()
    stale = []
    for page in sorted({p for p, _ in BLOCKS.values()}):
        try:
            new = rendered(page)
        except ValueError as err:
            print(err, file=sys.stderr)
            return 1
        if new != page.read_text(encoding="utf-8"):
            stale.append(page)
            if not args.check:
                page.write_text(new, encoding="utf-8")
    if args.check and stale:
        print(f"out of date: {', '.join(map(str, stale))}; run python benchmarks/render_docs.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
