"""Write the generator-fidelity tables of docs/generative.md from the committed reports in docs/results/.

Why a script: the numbers a page quotes must come from a committed report that
anyone can re-check, never typed by hand. Every ``docs/results/generator_fidelity_*.json``
(written by ``benchmarks/generator_fidelity.py``) becomes one table between the
``<!-- generator-fidelity:begin -->`` and ``<!-- generator-fidelity:end -->`` markers of
docs/generative.md; ``--check`` exits 1 when the page is out of date (the test suite runs it).

    python benchmarks/render_fidelity.py           # rewrite the block
    python benchmarks/render_fidelity.py --check   # is the page in sync with the reports?
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "generative.md"
BEGIN, END = "<!-- generator-fidelity:begin -->", "<!-- generator-fidelity:end -->"


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
            f"{' / '.join(f'{x:.2f}' for x in ns)} | {auc} |")


def render(results: Path = ROOT / "docs" / "results") -> str:
    """The markdown block (markers included) for every report in ``results``."""
    parts = [BEGIN, ""]
    for path in sorted(results.glob("generator_fidelity_*.json")):
        rep = json.loads(path.read_text(encoding="utf-8"))
        n_seeds = {s["task_value"]["seeds"] for s in rep["sites"].values()}
        parts += [f"**{rep['scenario']}** (`{path.relative_to(ROOT)}`, updated {rep.get('updated', '?')}; "
                  f"task network trained {'/'.join(map(str, sorted(n_seeds)))} time(s) per set, validation "
                  "patients only; PSNR in dB):", "",
                  "| generator | split | site | kind | optimiser steps | training | stopped by | recon. PSNR | "
                  "input | trained on real | representation gap | samples gap | companions gap | "
                  "noise power, samples / real, 4 bands (low → high) | two-sample AUC − floor |",
                  "| --- | ---: | --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
        parts += [_row(k, r) for k, r in sorted(rep["sites"].items())]
        parts.append("")
    parts.append(END)
    return "\n".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/generative.md is out of date")
    args = ap.parse_args()
    page = PAGE.read_text(encoding="utf-8")
    if BEGIN not in page or END not in page:
        print(f"{PAGE}: markers {BEGIN} / {END} missing", file=sys.stderr)
        return 1
    new = page[: page.index(BEGIN)] + render() + page[page.index(END) + len(END):]
    if args.check:
        if new != page:
            print(f"{PAGE} is out of date: run python benchmarks/render_fidelity.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
