"""Site-generator quality on the bundled cohort, as the default study trains it.

Builds the default study's cohort (``simulations/default.toml``: CT, 8
patients x 24 slices per site at 64x64, split by patient), trains site-1's
generator with the study's profile and overrides, samples with the study's
sampler settings and scores the samples against site-1's held-out real slices
with :func:`fedsynth.generative.evaluate_quality` (histogram W1, MS-SSIM
diversity, Fréchet distance in the site's own encoder space), next to the
noise / blurred-mean baselines and the real-train-vs-real-test floor that the
same call computes.

Each ``--variant`` (comma-separated ``key=value`` profile overrides, or
``default``) trains its own generator, so one run can compare e.g. the default
v-prediction objective with ``prediction_type=epsilon``. The Fréchet distance
lives in each generator's own encoder space: compare a variant's number with
the baselines on its own row, not across rows.

    python benchmarks/ldm_quality.py --out runs/ldm_quality --grid docs/img/ldm_default_site1.png
    python benchmarks/ldm_quality.py --variant default --variant prediction_type=epsilon
"""

from __future__ import annotations

import argparse
import time
import tomllib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/ldm_quality"))
    ap.add_argument("--scenario", type=Path, default=ROOT / "simulations" / "default.toml")
    ap.add_argument("--variant", action="append", help="profile overrides, e.g. prediction_type=epsilon")
    ap.add_argument("--n", type=int, default=64, help="synthetic samples to score")
    ap.add_argument("--grid", type=Path, help="copy the first variant's sample grid here (e.g. docs/img/...)")
    args = ap.parse_args()

    from fedsynth.data import ingest_site
    from fedsynth.data.cohort import make_cohort
    from fedsynth.generative import evaluate_quality, load_generator, load_profile, train_ldm
    from fedsynth.generative.commands import parse_overrides

    spec = tomllib.loads(args.scenario.read_text())
    c, g = spec["cohort"], spec["generator"]
    make_cohort(c["modality"], c["sites"], c["patients"], args.out / "cohort", slices=c["slices"], size=c["size"],
                seed=c["seed"], progress_bar=False)
    store = ingest_site(args.out / "cohort" / "site-1", c["modality"], out=args.out / "store", size=c["size"],
                        train_fraction=c["train_fraction"], seed=c["seed"], progress=False)
    train, test = np.asarray(store.train_images()), np.asarray(store.test_images())
    rows = []
    for text in args.variant or ["default"]:
        overrides = {**g.get("overrides", {}), **(parse_overrides(text.split(",")) if text != "default" else {})}
        cfg = load_profile(g["profile"], **overrides)
        work = args.out / ("gen-" + (text.replace("=", "-").replace(",", "_") or "default"))
        t0 = time.perf_counter()
        train_ldm(train, work, cfg, resume=True, progress=True)
        train_s = time.perf_counter() - t0
        gen = load_generator(work)
        t1 = time.perf_counter()
        rep = evaluate_quality(gen, test, work / "quality", n=args.n, steps=g.get("sample_steps"),
                               real_reference=train)
        rows.append((text, train_s, time.perf_counter() - t1, rep))
        if args.grid and text == (args.variant or ["default"])[0]:
            args.grid.write_bytes(Path(rep["files"]["grid"]).read_bytes())
        if gen.config.restore_texture and gen.texture_spectrum is not None:  # the same samples without texture
            plain = gen.sample(args.n, steps=g.get("sample_steps"), texture=False)
            rep_plain = evaluate_quality(plain, test, work / "quality-no-texture", generator=gen, real_reference=train)
            rows.append((text + " (texture off)", 0.0, 0.0, rep_plain))

    print(f"\nsite-1: {len(train)} training, {len(test)} held-out slices at {c['size']}x{c['size']}; "
          f"profile {g['profile']}, overrides {g.get('overrides', {})}, {g.get('sample_steps')} sampling steps\n")
    print(f"fine texture of the real held-out slices: {rows[0][3]['real_test_fine_texture']:.4f}\n")
    print("| variant | set | histogram W1 ↓ | MS-SSIM diversity (1 − mean) | Fréchet, own encoder ↓ | fine texture |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for text, _, _, rep in rows:
        sets = [("synthetic", rep["synthetic"]), ("baseline: noise", rep["baselines"]["noise"]),
                ("baseline: blurred mean", rep["baselines"]["blurred_mean"]),
                ("real train vs test", rep["real_train_vs_test"])]
        for name, m in sets:
            div = "—" if m["ms_ssim_diversity"] is None else f"{1 - m['ms_ssim_diversity']:.2f}"
            fd = f"{m['frechet_ae']:.3f}" if "frechet_ae" in m else "– (no encoder)"
            print(f"| {text} | {name} | {m['histogram_w1']:.3f} | {div} | {fd} | "
                  f"{m['fine_texture']:.4f} |")
    print()
    for text, train_s, eval_s, rep in rows:
        print(f"{text}: train {train_s:.0f} s (0 when an earlier run's model was reused), sample+score {eval_s:.0f} s, json {rep['files']['json']}")


if __name__ == "__main__":
    main()
