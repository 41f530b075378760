"""The paper's single-site experiment: real vs gate-approved synthetic training data.

On one site of the bundled cohort: train the site's latent diffusion model on
its real training slices, generate candidates, keep those the privacy gate
certifies, and train the downstream network twice with the same config and
budget: (a) on the real training slices, (b) on an equal number of
gate-approved synthetic slices. Both are scored on the same held-out real test
patients (same degradation seed, so per-image metrics are paired), next to the
degraded input. Statistics: mean difference with bootstrap CI, paired t-test,
Wilcoxon, TOST with the default margins (0.5 dB PSNR, 0.01 SSIM).

CT: low-dose denoising with RED-CNN. MRI: x2 k-space super-resolution with SRCNN.

    python benchmarks/paper_single_site.py --modality ct --out runs/paper
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

TASKS = {"ct": dict(task="ldct", network="rednet"), "mri": dict(task="sr", network="srcnn")}


def run_modality(modality: str, args: argparse.Namespace) -> dict:
    from fedsynth.data import ingest_site
    from fedsynth.data.cohort import make_cohort
    from fedsynth.generative import load_generator, load_profile, train_ldm
    from fedsynth.generative.commands import parse_overrides
    from fedsynth.privacy import GateConfig, PrivacyGate
    from fedsynth.report import DEFAULT_MARGINS, compare, render_html, summarise, write_report
    from fedsynth.tasks import TaskConfig, evaluate_network, train_network

    t: dict[str, float] = {}
    t0 = time.perf_counter()
    root = Path(args.out) / modality
    cohort = root / "cohort"
    make_cohort(modality, sites=1, patients=args.patients, out=cohort, slices=args.slices, size=args.size,
                seed=args.seed, progress_bar=False)
    store = ingest_site(cohort / "site-1", modality=modality, out=root / "store", size=args.size,
                        train_fraction=0.75, seed=args.seed)
    real = np.asarray(store.train_images())
    test = np.asarray(store.test_images())
    t["cohort_ingest"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    epochs = {k: v for k, v in (("ae_epochs", args.ae_epochs), ("unet_epochs", args.unet_epochs)) if v is not None}
    extra = parse_overrides(args.set)
    ldm = load_profile(args.profile, image_size=args.size, checkpoint_every=args.ldm_checkpoint_every,
                       **epochs, **extra)
    train_ldm(real, root / "generator", ldm, resume=True, progress=False)
    gen = load_generator(root / "generator")
    t["ldm_train"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    gate = PrivacyGate(real, GateConfig(), reference_groups=np.asarray(store.train_patient_ids()))
    calls = iter(range(10_000))
    result = gate.run(lambda n: gen.sample(n, seed=args.seed + 1000 * next(calls)), quota=len(real),
                      max_attempts=args.max_attempts_factor * len(real))
    synth = result.accepted
    t["sample_gate"] = time.perf_counter() - t2
    n = min(len(real), len(synth))
    if n < 2:
        raise SystemExit(f"{modality}: the gate accepted only {len(synth)} images; nothing to train on")
    pick = np.random.default_rng(args.seed).permutation(len(real))[:n]
    real_n = real[np.sort(pick)]
    synth_n = synth[:n]

    cfg = TaskConfig(**TASKS[modality], epochs=args.task_epochs, seed=args.seed)
    per_image: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    training: dict[str, dict] = {}
    for name, data in (("real", real_n), ("synthetic", synth_n)):
        t3 = time.perf_counter()
        model, hist = train_network(data, cfg, progress=False)
        m = evaluate_network(model, test, cfg, seed=args.seed + 1_000_000)
        t[f"train_{name}"] = time.perf_counter() - t3
        per_image[name] = {"site-1": {k: v for k, v in m.items() if not k.startswith("input_")}}
        per_image.setdefault("input", {"site-1": {k[6:]: v for k, v in m.items() if k.startswith("input_")}})
        training[name] = {"epochs_run": len(hist["epochs"]), "best_epoch": hist["best_epoch"],
                          "best_val_loss": float(hist["best_val_loss"]), "stopped_early": hist["stopped_early"]}
    margins = {k: DEFAULT_MARGINS[k] for k in ("psnr", "ssim")}
    comparisons = compare(per_image, "real", margins, seed=args.seed)
    report = {
        "methods": summarise(per_image, seed=args.seed),
        "comparisons": comparisons,
        "privacy": {"site-1": {
            "threshold": {k: float(v) for k, v in gate.thresholds.items()},
            "n_published": int(len(synth)),
            "n_rejected": int(result.n_candidates - len(synth)),
        }},
        "wall_seconds": t,
        "training": training,
        "task": cfg.task, "network": cfg.network, "modality": modality,
        "notes": [f"{n} real vs {n} gate-approved synthetic training slices; {len(test)} held-out real test slices; "
                  f"LDM profile {args.profile} (ae_epochs {ldm.ae_epochs}, unet_epochs {ldm.unet_epochs}, "
                  f"overrides {extra}); "
                  f"task {cfg.model_dump_json()}",
                  f"gate acceptance rate {result.acceptance_rate:.3f}, quota met: {result.quota_met}"],
    }
    write_report(root, report)
    samples = {"real": real[:8], "synthetic": synth[:8]}
    render_html(root / "report.json", root / "report.html", figures_inputs={"samples": samples})
    return {"modality": modality, "n_train": n, "n_test": len(test), "report": report}


def table(results: list[dict]) -> str:
    lines = ["| modality / task | network | training data | n train | n test | PSNR (dB) | SSIM |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for r in results:
        rep = r["report"]
        for method in ("input", "real", "synthetic"):
            p = rep["methods"][method]["pooled"]
            label = {"input": "— (degraded input)", "real": "(a) real", "synthetic": "(b) synthetic, gated"}[method]
            lines.append(f"| {r['modality']} / {rep['task']} | {rep['network'] if method != 'input' else '—'} | "
                         f"{label} | {r['n_train'] if method != 'input' else '—'} | {r['n_test']} | "
                         f"{p['psnr']['mean']:.2f} [{p['psnr']['ci_low']:.2f}, {p['psnr']['ci_high']:.2f}] | "
                         f"{p['ssim']['mean']:.4f} |")
    lines += ["", "| modality | metric | mean diff (b − a) | 95% CI | p t-test | p Wilcoxon | p TOST | margin | "
              "equivalent |", "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in results:
        for c in r["report"]["comparisons"]:
            if c["a"] != "synthetic" or c["site"] != "pooled":
                continue
            lines.append(f"| {r['modality']} | {c['metric']} | {c['mean_diff']:+.4f} | [{c['ci_low']:+.4f}, "
                         f"{c['ci_high']:+.4f}] | {c['p_ttest']:.3g} | {c['p_wilcoxon']:.3g} | {c['p_tost']:.3g} | "
                         f"±{c['margin']} | {'yes' if c['equivalent'] else 'no'} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/paper_single_site")
    ap.add_argument("--modality", choices=["ct", "mri", "both"], default="both")
    ap.add_argument("--patients", type=int, default=6)
    ap.add_argument("--slices", type=int, default=16)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--profile", default="small-latent",
                    help="generator profile (default small-latent, the paper's latent model; small is pixel-space)")
    ap.add_argument("--ae-epochs", type=int, help="override the profile's autoencoder epochs")
    ap.add_argument("--unet-epochs", type=int, help="override the profile's diffusion epochs")
    ap.add_argument("--ldm-checkpoint-every", type=int, default=1,
                    help="LDM epochs between training-state checkpoints (only speed changes, not the result: "
                         "each checkpoint rewrites the full state, which dominates long runs on a busy disk)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="LDM profile override, e.g. --set restore_texture=false (JSON values)")
    ap.add_argument("--task-epochs", type=int, default=10)
    ap.add_argument("--max-attempts-factor", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    mods = ["ct", "mri"] if args.modality == "both" else [args.modality]
    results = [run_modality(m, args) for m in mods]
    print(table(results))
    for r in results:
        print(f"\n{r['modality']} wall seconds: {json.dumps({k: round(v, 1) for k, v in r['report']['wall_seconds'].items()})}")
        print(f"{r['modality']} task training: {json.dumps(r['report']['training'])}")


if __name__ == "__main__":
    main()
