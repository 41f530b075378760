"""``fedsynth site ...``: train, sample (through the privacy gate) and evaluate a site generator.

Layout of a site work directory ``W``: ``W/cache`` (the ingested slice store, named by ``W/store.json``),
``W/model.pt`` + ``W/train_state.pt`` + ``W/summary.json`` (the generator),
``W/gate`` (the gate's reference cache), ``W/quality`` (evaluation output).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["STORE_POINTER", "open_workdir_store", "parse_overrides", "register"]

#: File in the work directory naming the slice store the generator was trained on.
STORE_POINTER = "store.json"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``site`` command group."""
    site = sub.add_parser("site", help="train, sample and evaluate a site's diffusion generator",
                          description="One site's generator: a diffusion model trained on its own scans.")
    ssub = site.add_subparsers(dest="site_command", metavar="SUBCOMMAND", required=True)

    tr = ssub.add_parser(
        "train", help="ingest a NIfTI directory and train (or resume) the generator",
        description="Ingest SITE_DIR into WORKDIR/cache (patients split into train / validation / test), then "
        "train the generator on the training slices — pixel-space diffusion (profiles tiny, small) or an "
        "autoencoder and latent diffusion (small-latent, paper) — until its diffusion loss on the validation "
        "patients stops improving, checkpointing after every epoch. --resume continues an interrupted run "
        "exactly; a finished run resumed does nothing.",
    )
    tr.add_argument("--site-dir", type=Path, required=True, help="directory of NIfTI volumes, one per patient")
    tr.add_argument("--modality", choices=["ct", "mri", "pet"], required=True)
    tr.add_argument("--profile", default="small",
                    help="tiny | small | small-latent | tiny-latent | paper (default small)")
    tr.add_argument("--workdir", type=Path, required=True, metavar="W")
    tr.add_argument("--size", type=int, help="slice edge length in pixels (default: the profile's image_size)")
    tr.add_argument("--seed", type=int, default=0, help="training and split seed (default 0)")
    tr.add_argument("--train-fraction", type=float, default=0.6, help="share of patients for training (default 0.6)")
    tr.add_argument("--val-fraction", type=float, default=0.2,
                    help="share of patients for validation: their slices decide how long the generator trains "
                    "(default 0.2; 0 trains for the profile's maximum)")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a profile field, e.g. --set unet_epochs=50 (repeatable; JSON values)")
    tr.add_argument("--resume", action="store_true", help="continue from WORKDIR/train_state.pt")
    tr.set_defaults(func=_train)

    sa = ssub.add_parser(
        "sample", help="draw synthetic slices (through the privacy gate by default)",
        description="Sample N slices from the trained generator in WORKDIR and write an (N, H, W) float32 .npy "
        "in [0, 1]. By default only images the privacy gate accepts are written, with OUT's "
        ".certificate.json beside it; --no-gate is for local inspection only and must not be shared.",
    )
    sa.add_argument("--workdir", type=Path, required=True, metavar="W")
    sa.add_argument("--n", type=int, default=16, help="number of images (default 16)")
    sa.add_argument("--out", type=Path, required=True, metavar="FILE.npy")
    sa.add_argument("--steps", type=int, help="sampling steps (default: the profile's sample_steps, <= 50)")
    sa.add_argument("--sampler", choices=["ddim", "dpm", "ddpm"],
                    help="default: the generator's (dpm for pixel generators, ddim for latent ones)")
    sa.add_argument("--seed", type=int, default=0)
    sa.add_argument("--batch-size", type=int, default=64)
    sa.add_argument("--max-attempts", type=int, help="gate: most candidates to draw (default 10 x N)")
    sa.add_argument("--no-gate", action="store_true", help="skip the privacy gate (local inspection only)")
    sa.add_argument("--gate-untextured", action="store_true",
                    help="gate: accept a sample only if its untextured version also clears every threshold")
    sa.add_argument("--no-texture", action="store_true",
                    help="do not add the fitted texture (the gate then certifies the untextured images)")
    sa.set_defaults(func=_sample)

    ev = ssub.add_parser(
        "evaluate", help="quality of the generator vs held-out real slices (JSON + PNG grid)",
        description="A classifier two-sample test (held-out AUC of a CNN trained from scratch to tell synthetic "
        "from the site's training and validation patients' slices, beside the real-vs-real floor), histogram "
        "distance, MS-SSIM diversity and a Fréchet distance in the site's own encoder "
        "space (not Inception-FID), each beside noise and blurred-mean baselines; writes "
        "OUT/quality.json and OUT/samples_vs_real.png (default OUT: WORKDIR/quality).",
    )
    ev.add_argument("--workdir", type=Path, required=True, metavar="W")
    ev.add_argument("--n", type=int, default=64, help="synthetic images to draw (default 64)")
    ev.add_argument("--steps", type=int)
    ev.add_argument("--sampler", choices=["ddim", "dpm", "ddpm"], help="default: the generator's")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--out", type=Path, help="output directory (default WORKDIR/quality)")
    ev.add_argument("--no-two-sample", action="store_true",
                    help="skip the classifier two-sample test (a CNN trained to tell synthetic from real, ~15 s at 64 px)")
    ev.set_defaults(func=_evaluate)


def parse_overrides(pairs: list[str]) -> dict[str, object]:
    """``["KEY=VALUE", ...]`` -> profile overrides (values parsed as JSON where they parse, else strings)."""
    from fedsynth.errors import ConfigError

    out: dict[str, object] = {}
    for item in pairs:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def open_workdir_store(workdir: Path) -> Any:
    """The slice store a generator work directory was trained on (named by ``W/store.json``)."""
    from fedsynth.data import open_store
    from fedsynth.errors import DataError

    pointer = workdir / STORE_POINTER
    if not pointer.is_file():
        raise DataError(f"{pointer}: no slice store recorded (run `fedsynth site train` first)")
    return open_store(Path(json.loads(pointer.read_text(encoding="utf-8"))["store"]))


def _train(args: argparse.Namespace) -> int:
    from fedsynth.data import ingest_site
    from fedsynth.generative import load_profile, train_ldm

    overrides = {"seed": args.seed, **parse_overrides(args.set)}
    if args.size:
        overrides["image_size"] = args.size
    cfg = load_profile(args.profile, **overrides)  # validate before the (slow) ingestion
    store = ingest_site(args.site_dir, modality=args.modality, out=args.workdir / "cache",
                        size=cfg.image_size, seed=args.seed, train_fraction=args.train_fraction,
                        val_fraction=args.val_fraction)
    from fedsynth.io_utils import write_json_atomic

    write_json_atomic(args.workdir / STORE_POINTER, {"store": str(Path(store.path).resolve())})
    summary = train_ldm(store.train_images(), args.workdir, cfg, resume=args.resume, validation=store.val_images())
    ae = f", AE L1 {summary['final_ae_l1']:.4f}" if summary["final_ae_l1"] is not None else ""
    best = (f", best held-out loss {summary['best_val_loss']:.4f} at UNet epoch {summary['best_epoch']} "
            f"(stopped by {summary['stopped']})" if summary.get("best_val_loss") is not None else "")
    print(f"trained {cfg.profile} generator ({cfg.kind}): {summary['steps']} steps{ae}, diffusion loss "
          f"{summary['final_unet_mse']:.4f}{best} -> {args.workdir / 'model.pt'}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    import numpy as np

    from fedsynth.errors import ConfigError, GateError
    from fedsynth.generative import load_generator
    from fedsynth.io_utils import atomic_write, write_json_atomic

    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    gen = load_generator(args.workdir)
    texture = False if args.no_texture else None  # None: the generator's config (restore_texture)
    if args.no_gate:
        images = gen.sample(args.n, steps=args.steps, seed=args.seed, sampler=args.sampler,
                            batch_size=args.batch_size, texture=texture)
        cert = None
    else:
        try:
            from fedsynth.privacy import GateConfig, PrivacyGate
        except ImportError:
            raise GateError("the privacy gate (fedsynth.privacy) is not available; refusing to write ungated "
                            "images (use --no-gate for local inspection only)") from None
        store = open_workdir_store(args.workdir)
        gate = PrivacyGate(store.train_images(), GateConfig(require_companions=args.gate_untextured),
                           reference_groups=store.train_patient_ids(),
                           cache_dir=args.workdir / "gate")
        calls = {"n": 0}

        def source(k: int) -> Any:
            calls["n"] += 1
            return gen.sample(k, steps=args.steps, seed=args.seed * 100_003 + calls["n"],
                              sampler=args.sampler, batch_size=args.batch_size, texture=texture,
                              with_untextured=args.gate_untextured)

        res = gate.run(source, args.n, args.max_attempts or 10 * args.n, gen.checkpoint_hash)
        images, cert = np.ascontiguousarray(res.accepted, np.float32), res.certificate.body()
    with atomic_write(args.out, "wb") as fh:
        np.save(fh, images.astype(np.float32))
    msg = f"wrote {len(images)} images {tuple(images.shape[1:])} to {args.out}"
    if cert is not None:
        cpath = args.out.with_name(args.out.stem + ".certificate.json")
        write_json_atomic(cpath, cert)
        msg += f" (gate-accepted; certificate {cpath})"
        if len(images) < args.n:
            msg += f"; quota not met: {len(images)}/{args.n}"
    else:
        msg += " (UNGATED: local inspection only)"
    print(msg)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from fedsynth.generative import evaluate_quality, load_generator

    gen = load_generator(args.workdir)
    store = open_workdir_store(args.workdir)
    out = args.out or args.workdir / "quality"
    # the site's training and validation patients; the test patients stay untouched
    two_sample = None if args.no_two_sample else store.parts("train", "val")
    rep = evaluate_quality(gen, store.test_images(), out, n=args.n, seed=args.seed, steps=args.steps,
                           sampler=args.sampler, real_reference=store.train_images(), two_sample_real=two_sample)
    s, b = rep["synthetic"], rep["baselines"]
    frechet = (f"frechet_ae {s['frechet_ae']:.4g} (noise {b['noise']['frechet_ae']:.4g}, blurred mean "
               f"{b['blurred_mean']['frechet_ae']:.4g}); " if "frechet_ae" in s else "")
    print(f"{frechet}histogram_w1 {s['histogram_w1']:.4g}; "
          f"ms-ssim diversity {s['ms_ssim_diversity']:.3f} (real {rep['real_test_diversity']:.3f}) -> "
          f"{rep['files']['json']}")
    if "ratio" in rep.get("noise_spectrum", {}):
        ns = rep["noise_spectrum"]
        print("noise power spectrum, samples / real training slices per band: "
              + ", ".join(f"{v:.2f}" for v in ns["ratio"]) + (" (within" if ns["within"] else " (outside")
              + f" +-{ns['tolerance']:.0%})")
    t = gen.training
    if t.get("optimizer_steps"):
        print(f"training: {t['optimizer_steps']} optimiser steps, {t['samples_seen']} images seen, "
              f"{t['train_seconds']} s, stopped by {t['stopped']}")
    if "skipped" in rep.get("two_sample", {}):
        print(f"two-sample test skipped: {rep['two_sample']['skipped']}")
    elif "two_sample" in rep:
        sv, rr = rep["two_sample"]["synthetic_vs_real"], rep["two_sample"]["real_vs_real"]
        print(f"two-sample AUC synthetic vs real {sv['auc']:.3f} [{sv['ci95'][0]:.2f}, {sv['ci95'][1]:.2f}]; "
              f"real-vs-real floor {rr['auc']:.3f} [{rr['ci95'][0]:.2f}, {rr['ci95'][1]:.2f}] "
              f"({rep['two_sample']['real_patients']} patients)")
    print("the task's view (representation ceiling, samples' value on validation patients): "
          f"fedsynth site-fidelity --workdir {args.workdir} --task ...")
    return 0
