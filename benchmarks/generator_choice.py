"""Choose a site generator's settings on validation patients, never on test patients.

Why: the generator defaults were once picked as the best of five variants
scored on test slices (docs/results.md, "Withdrawn"); a choice must be made
where the study makes every other one. For one site of a scenario's cohort,
split by patient as the study splits it (train / validation / test), this
trains one generator per variant on the site's training patients, samples
as many images as the site publishes, and runs the classifier two-sample
test (:func:`fedsynth.generative.two_sample.two_sample_report`) of the
samples against the site's training and validation patients — the real side
the study's own two-sample test uses, with no test patient — beside the
real-vs-real floor from the same patients. The choice is the variant with
the smallest gap between its AUC and the floor; a gap within another's 95 %
CI is called a tie. Variants that differ only in ``restore_texture`` share
one trained generator (texture is added at sampling).

Prints a markdown table and writes ``OUT/choice.json``.

    python benchmarks/generator_choice.py --out runs/generator_choice
    python benchmarks/generator_choice.py --variant default --variant adv_weight=0.1,adv_start_epoch=32
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from fedsynth.config import load_toml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VARIANTS = ["default", "augment_p=0.0", "unet_lr=0.0003"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/generator_choice"))
    ap.add_argument("--scenario", type=Path, default=ROOT / "simulations" / "default.toml")
    ap.add_argument("--site", type=int, default=1, help="which site of the cohort (1-based)")
    ap.add_argument("--variant", action="append", help="profile overrides (key=value,...) or 'default'; repeatable")
    ap.add_argument("--repeats", type=int, default=3, help="two-sample test repeats (3 folds each)")
    args = ap.parse_args()

    from fedsynth.data import ingest_configured_site
    from fedsynth.federation.config import ScenarioConfig
    from fedsynth.federation.study_dir import StudyLayout, simulated_site
    from fedsynth.generative import load_generator, load_profile, train_ldm
    from fedsynth.generative.commands import parse_overrides
    from fedsynth.generative.two_sample import two_sample_report

    sc = load_toml(args.scenario, ScenarioConfig)
    c = sc.cohort
    from fedsynth.data.cohort import make_cohort

    make_cohort(c.modality, c.sites, c.patients, StudyLayout(args.out).cohort, slices=c.slices, size=c.size,
                seed=c.seed, progress_bar=False)
    store = ingest_configured_site(simulated_site(args.out, sc, args.site))
    train = np.asarray(store.train_images())
    real, groups = store.parts("train", "val")  # the study's real side: no test patient
    n = sc.publish.quota
    rows = []
    for text in args.variant or DEFAULT_VARIANTS:
        overrides = {**sc.generator.overrides, **(parse_overrides(text.split(",")) if text != "default" else {})}
        cfg = load_profile(sc.generator.profile, **overrides)
        shared = {k: v for k, v in overrides.items() if k != "restore_texture"}
        key = ",".join(f"{k}={v}" for k, v in sorted(shared.items()) if sc.generator.overrides.get(k) != v)
        work = args.out / ("gen-" + (key.replace("=", "-").replace(",", "_") or "default"))
        t0 = time.perf_counter()
        train_ldm(train, work, load_profile(sc.generator.profile, **shared), resume=True, progress=True,
                  validation=store.val_images())
        train_s = time.perf_counter() - t0
        gen = load_generator(work)
        samples = gen.sample(n, steps=sc.generator.sample_steps, seed=sc.seed, texture=cfg.restore_texture)
        rep = two_sample_report(real, groups, samples, seed=sc.seed, repeats=args.repeats)
        rows.append({"variant": text, "train_s": train_s, **rep})

    print(f"\nsite-{args.site} of {args.scenario.name}: {len(train)} training slices; real side "
          f"{len(real)} slices of {len(np.unique(groups))} training + validation patients (no test patient); "
          f"{n} samples per variant\n")
    print("| variant | synthetic vs real AUC [95 % CI] | real vs real floor [95 % CI] | gap | train s |")
    print("| --- | --- | --- | ---: | ---: |")
    scored = []
    for r in rows:
        if "skipped" in r:
            print(f"| {r['variant']} | skipped: {r['skipped']} | | | {r['train_s']:.0f} |")
            continue
        sv, rr = r["synthetic_vs_real"], r["real_vs_real"]
        gap = sv["auc"] - rr["auc"]
        scored.append((gap, sv["ci95"][1] - sv["auc"], r["variant"]))
        print(f"| {r['variant']} | {sv['auc']:.3f} [{sv['ci95'][0]:.3f}, {sv['ci95'][1]:.3f}] | "
              f"{rr['auc']:.3f} [{rr['ci95'][0]:.3f}, {rr['ci95'][1]:.3f}] | {gap:+.3f} | {r['train_s']:.0f} |")
    choice = None
    if scored:
        best = min(scored)
        ties = [v for gap, _, v in scored if v != best[2] and gap - best[0] <= best[1]]
        choice = {"variant": best[2], "gap": best[0], "ties_within_ci": ties}
        print(f"\nchoice: {best[2]} (gap {best[0]:+.3f})" + (f"; within its CI: {', '.join(ties)}" if ties else ""))
    (args.out / "choice.json").write_text(json.dumps({"scenario": str(args.scenario), "site": args.site,
                                                      "rows": rows, "choice": choice}, indent=1, default=float))


if __name__ == "__main__":
    main()
