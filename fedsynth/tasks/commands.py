"""``fedsynth evaluate``: train a downstream network on one image set and test it on another;
``fedsynth site-fidelity``: what a site's generator is worth to the task, on its validation patients."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="train a denoising / super-resolution network on one set, test on another",
        description="Degrade both sets identically (low-dose CT in the projection domain, or k-space / blur "
        "resolution loss), train the network on --train (validation split, early stopping) and score it on "
        "--test: per-image PSNR / SSIM (data range 1) / RMSE (and RMSE in HU for CT) of the network and of "
        "the degraded input. Writes OUT/metrics.json, OUT/report.json, OUT/model.pt, OUT/examples.npz; "
        "render them with 'fedsynth report OUT'.",
    )
    p.add_argument("--task", choices=["ldct", "sr", "lcpet"],
                   help="ldct: low-dose CT denoising; sr: super-resolution; lcpet: low-count PET denoising")
    p.add_argument("--train", type=Path, required=True, metavar="PATH",
                   help="training images: .npy (N,H,W) in [0,1], .npz, or a NIfTI directory (needs --modality)")
    p.add_argument("--test", type=Path, required=True, metavar="PATH", help="test images, same formats")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    p.add_argument("--network", choices=["rednet", "srcnn", "unet", "edsr"],
                   help="default: rednet for ldct, srcnn for sr")
    p.add_argument("--epochs", type=int, metavar="N", help="maximum epochs (early stopping may end sooner)")
    p.add_argument("--channels", type=int, metavar="C", help="network width (rednet: 96 in the paper)")
    p.add_argument("--dose-fraction", type=float, metavar="F", help="ldct: low dose as a fraction of full dose")
    p.add_argument("--sr-factor", type=int, metavar="F", help="sr: resolution reduction factor (2 or 4)")
    p.add_argument("--seed", type=int, help="seed for weights, patches and noise")
    p.add_argument("--config", type=Path, metavar="TOML",
                   help="task settings (a [task] table or top-level keys of TaskConfig); flags override")
    p.add_argument("--modality", choices=["ct", "mri", "pet"], help="needed for NIfTI directories")
    p.add_argument("--size", type=int, metavar="PX", help="resize both sets to PX x PX")
    p.add_argument("--pixel-mm", type=float, metavar="MM", dest="pixel_mm",
                   help="ldct: pixel edge in mm of the images as given (after --size); sets the path lengths")
    p.set_defaults(func=_evaluate)

    f = sub.add_parser(
        "site-fidelity",
        help="site: what the generator is worth to the task (representation ceiling, samples, noise spectrum)",
        description="On the site's validation patients (never its test patients): the task network trained on "
        "the real training slices, on their representation through the generator (the representation ceiling; "
        "exact, so skipped, for pixel generators), on as many samples and on their companions, each stopped by "
        "the study's rule, beside the degraded input; the representation's reconstruction PSNR/SSIM; the "
        "samples' noise power spectrum against the real slices' per radial band; the classifier two-sample AUC "
        "beside its real-vs-real floor; the generator's training effort. Writes OUT/fidelity.json (default "
        "WORKDIR/fidelity).",
    )
    f.add_argument("--workdir", type=Path, required=True, metavar="W", help="the generator's work directory")
    f.add_argument("--task", choices=["ldct", "sr", "lcpet"], help="the downstream task (or --config)")
    f.add_argument("--config", type=Path, metavar="TOML", help="task settings ([task] table or TaskConfig keys)")
    f.add_argument("--n", type=int, metavar="N", help="samples to draw (default: as many as training slices)")
    f.add_argument("--seeds", type=int, default=1, help="task trainings per set (default 1)")
    f.add_argument("--max-epochs", type=int, default=30, help="the rule's maximum epochs (default 30)")
    f.add_argument("--check-every", type=int, default=2, help="epochs between validations (default 2)")
    f.add_argument("--patience", type=int, default=3, help="validations without improvement (default 3)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--no-two-sample", action="store_true", help="skip the classifier two-sample test")
    f.add_argument("--out", type=Path, metavar="DIR", help="output directory (default WORKDIR/fidelity)")
    f.set_defaults(func=_site_fidelity)


def _evaluate(args: argparse.Namespace) -> int:
    from fedsynth.data.stack import read_image_stack
    from fedsynth.errors import ConfigError
    from fedsynth.tasks.config import load_task_config
    from fedsynth.tasks.experiment import train_and_evaluate

    overrides = {
        "task": args.task, "network": args.network, "epochs": args.epochs, "channels": args.channels,
        "dose_fraction": args.dose_fraction, "sr_factor": args.sr_factor, "seed": args.seed,
        "pixel_size_mm": args.pixel_mm,
    }
    if args.config is None and args.task is None:
        raise ConfigError("--task is required (ldct or sr) unless --config sets it")
    if args.config is not None:
        cfg = load_task_config(args.config, **overrides)
    else:
        cfg = load_task_config({}, **overrides)
    train = read_image_stack(args.train, size=args.size, modality=args.modality)
    test = read_image_stack(args.test, size=args.size, modality=args.modality)
    res = train_and_evaluate(train, test, cfg, args.out, sources={"train": str(args.train), "test": str(args.test)})
    s = res["summary"]
    print(f"{cfg.task} {cfg.network}: trained on {res['n_train']}, tested on {res['n_test']} images")
    for name in ("input", "network"):
        m = s[name]
        print(f"  {name:8s} PSNR {m['psnr']['mean']:.2f} dB [{m['psnr']['ci_low']:.2f}, {m['psnr']['ci_high']:.2f}]"
              f"  SSIM {m['ssim']['mean']:.4f}  RMSE {m['rmse']['mean']:.4f}")
    print(f"metrics: {Path(args.out) / 'metrics.json'}; render with: fedsynth report {args.out}")
    return 0


def _site_fidelity(args: argparse.Namespace) -> int:
    from fedsynth.config import validate
    from fedsynth.errors import ConfigError
    from fedsynth.generative import load_generator
    from fedsynth.generative.commands import open_workdir_store
    from fedsynth.io_utils import write_json_atomic
    from fedsynth.tasks.config import Budget, load_task_config
    from fedsynth.tasks.fidelity import site_fidelity

    if args.config is None and args.task is None:
        raise ConfigError("--task is required (ldct, sr or lcpet) unless --config sets it")
    if args.seeds < 1 or (args.n is not None and args.n < 2):
        raise ConfigError("--seeds must be >= 1 and --n >= 2")
    cfg = load_task_config(args.config if args.config is not None else {}, task=args.task, seed=args.seed)
    budget = validate(Budget, {"max_epochs": args.max_epochs, "check_every": args.check_every,
                               "patience": args.patience}, "the stopping rule")
    gen = load_generator(args.workdir)
    store = open_workdir_store(args.workdir)
    res = site_fidelity(gen, store, cfg, budget, seeds=args.seeds, n_samples=args.n, seed=args.seed,
                        two_sample=not args.no_two_sample)
    out = args.out or args.workdir / "fidelity"
    write_json_atomic(out / "fidelity.json", res)
    value = res["task_value"]
    print(f"{cfg.task} {cfg.network} on {value['n_val_slices']} validation slices of "
          f"{value['n_val_patients']} patients ({args.seeds} seed(s)); degraded input {value['input']['psnr']:.2f} dB")
    for name, s in value["sets"].items():
        gap = value.get("gaps", {}).get(name)
        print(f"  trained on {name:15s} PSNR {s['psnr']:.2f} dB  SSIM {s['ssim']:.4f}"
              + (f"  ({gap['psnr']:+.2f} dB vs real)" if gap else ""))
    if gen.exact_representation:
        print("  representation: exact (pixel generator): the ceiling equals real-slice training")
    else:
        r = res["reconstruction"]
        print(f"  representation of the validation slices: PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.4f}")
    ns = res["noise_spectrum"]["samples"]
    if "ratio" in ns:
        print("  noise power spectrum, samples / real per band: " + ", ".join(f"{v:.2f}" for v in ns["ratio"])
              + (" (within" if ns["within"] else " (outside") + f" +-{ns['tolerance']:.0%})")
    else:
        print(f"  noise power spectrum: not measured ({ns['skipped']})")
    if "two_sample" in res and "skipped" not in res["two_sample"]:
        sv, rr = res["two_sample"]["synthetic_vs_real"], res["two_sample"]["real_vs_real"]
        print(f"  two-sample AUC {sv['auc']:.3f} [{sv['ci95'][0]:.2f}, {sv['ci95'][1]:.2f}], real-vs-real floor "
              f"{rr['auc']:.3f} [{rr['ci95'][0]:.2f}, {rr['ci95'][1]:.2f}]")
    t = res["training"]
    print(f"  training: {t['optimizer_steps']} optimiser steps, {t['samples_seen']} images seen, "
          f"{t['train_seconds']} s, stopped by {t['stopped']} -> {out / 'fidelity.json'}")
    return 0
