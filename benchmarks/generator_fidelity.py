"""What each site's generator is worth to the task, per site of a scenario's cohort, on validation patients.

Why: the generator-fidelity issue asks, per site of the default and evidence
cohorts and before / after a change, for the representation ceiling, the
autoencoder's reconstruction PSNR (latent generators), the samples' noise
spectrum against the real slices, the optimiser steps and training wall time
and throughput (beside the machine's conv probe), the two-sample AUC minus
its real-vs-real floor, and a grid of samples beside their nearest real
training slices. This trains every site's generator exactly as the study
does (the scenario's profile and overrides, stopped on the site's validation
patients), then runs :func:`fedsynth.tasks.fidelity.site_fidelity` with the
scenario's task and stopping rule. Test patients are never read.

Resumable in pieces: generators checkpoint every epoch (``--out`` keeps
them), and each finished site is written into ``--report`` at once; a site
already there is skipped (``--force`` redoes it). Give the same
``--report`` to every piece.

    python benchmarks/generator_fidelity.py --scenario simulations/evidence.toml --split 0 --sites 1 \\
        --report docs/results/generator_fidelity_evidence.json
    python benchmarks/generator_fidelity.py --scenario simulations/default.toml --profile small-latent \\
        --label before --report docs/results/generator_fidelity_default.json   # the latent generator, for comparison
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _site_key(label: str, split: int, site: int) -> str:
    return f"{label}/split-{split}/site-{site}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", type=Path, default=ROOT / "simulations" / "default.toml")
    ap.add_argument("--split", type=int, default=0, help="which patient split (fold) of the cohort")
    ap.add_argument("--sites", default="all", help="comma-separated 1-based site numbers, or 'all'")
    ap.add_argument("--profile", help="generator profile (default: the scenario's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="generator override")
    ap.add_argument("--label", default="after", help="name of this generator in the report (e.g. before, after)")
    ap.add_argument("--seeds", type=int, default=2, help="task trainings per set")
    ap.add_argument("--out", type=Path, default=Path("runs/generator_fidelity"), help="work directory")
    ap.add_argument("--report", type=Path, required=True, help="JSON report, updated site by site")
    ap.add_argument("--grids", type=Path, default=ROOT / "docs" / "img",
                    help="where the sample / nearest-real grids go (PNG per site)")
    ap.add_argument("--force", action="store_true", help="redo sites already in the report")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    import numpy as np
    import torch

    from fedsynth.config import load_toml
    from fedsynth.data import ingest_configured_site
    from fedsynth.data.cohort import make_cohort
    from fedsynth.federation.config import ScenarioConfig
    from fedsynth.federation.study_dir import StudyLayout, simulated_site
    from fedsynth.generative import load_generator, load_profile, train_ldm
    from fedsynth.generative.commands import parse_overrides
    from fedsynth.generative.quality import save_nearest_grid
    from fedsynth.io_utils import write_json_atomic
    from fedsynth.machine_speed import machine_speed
    from fedsynth.tasks.fidelity import site_fidelity

    torch.set_num_threads(2)
    sc = load_toml(args.scenario, ScenarioConfig)
    sc = sc.model_copy(update={"cohort": sc.cohort.model_copy(update={"fold": args.split})})
    c = sc.cohort
    out = args.out / f"{sc.name}-split{args.split}"
    make_cohort(c.modality, c.sites, c.patients, StudyLayout(out).cohort, slices=c.slices, size=c.size,
                seed=c.seed, progress_bar=False)
    profile = args.profile or sc.generator.profile
    overrides = {**sc.generator.overrides, **parse_overrides(args.set)} if not args.profile else \
        {"image_size": c.size, **parse_overrides(args.set)}
    report: dict[str, Any] = json.loads(args.report.read_text()) if args.report.is_file() else {}
    report.setdefault("scenario", sc.name)
    report.setdefault("sites", {})
    sites = range(1, c.sites + 1) if args.sites == "all" else [int(s) for s in args.sites.split(",")]
    for k in sites:
        key = _site_key(args.label, args.split, k)
        if key in report["sites"] and not args.force:
            logging.info("%s: in the report already (--force redoes it)", key)
            continue
        site = simulated_site(out, sc, k)
        store = ingest_configured_site(site)
        cfg = load_profile(profile, **{"image_size": int(store.images.shape[-1]), **overrides})
        work = out / f"gen-{args.label}-site{k}"
        speed_before = machine_speed()
        t0 = time.perf_counter()
        train_ldm(store.train_images(), work, cfg, resume=True, progress=True, validation=store.val_images())
        train_wall = time.perf_counter() - t0
        gen = load_generator(work)
        t1 = time.perf_counter()
        res = site_fidelity(gen, store, sc.task, sc.training.budget(), seeds=args.seeds, seed=sc.seed)
        grid = args.grids / f"fidelity_{sc.name}_{args.label}_split{args.split}_site{k}.png"
        x = gen.sample(8, seed=sc.seed + 5)
        res["nearest_training"] = save_nearest_grid(x, store.train_images(), grid)
        res["grid"] = str(grid.relative_to(ROOT)) if grid.is_relative_to(ROOT) else str(grid)
        t = res["training"]
        seen = sum(t["samples_seen"].values())
        res["speed"] = {"conv_probe_gflops": speed_before["conv_gflops"], "cpu": speed_before["cpu"],
                        "train_wall_seconds_this_piece": round(train_wall, 1),
                        "train_images_per_second": round(seen / max(t["train_seconds"], 1e-9), 2),
                        "diagnostics_seconds": round(time.perf_counter() - t1, 1)}
        res["config"] = json.loads(cfg.model_dump_json())
        res["site"], res["split"], res["label"] = f"site-{k}", args.split, args.label
        report["sites"][key] = res
        report["updated"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        write_json_atomic(args.report, report)
        v = res["task_value"]
        gaps = ", ".join(f"{n} {g['psnr']:+.2f} dB" for n, g in v.get("gaps", {}).items())
        ns = res["noise_spectrum"]["samples"]["ratio"]
        ts = res.get("two_sample", {})
        auc = (f"AUC {ts['synthetic_vs_real']['auc']:.3f} (floor {ts['real_vs_real']['auc']:.3f})"
               if "synthetic_vs_real" in ts else "AUC skipped")
        print(f"{key}: real {v['sets']['real']['psnr']:.2f} dB, input {v['input']['psnr']:.2f} dB; {gaps}; "
              f"NPS ratio {np.round(ns, 2).tolist()}; {auc}; {t['optimizer_steps']} steps, "
              f"{t['train_seconds']:.0f} s at {res['speed']['conv_probe_gflops']} GFLOP/s", flush=True)


if __name__ == "__main__":
    main()
