"""``fedsynth evaluate``: train a downstream network on one image set and test it on another."""

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
