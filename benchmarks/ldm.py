"""Latent site generator (LDM) cost on this machine: training and sampling throughput, peak memory, sampler quality.

The latent generator's benchmark (its autoencoder and samplers); the pixel
generator's training throughput is ``benchmarks/generator_speed.py``.
For each profile (``tiny-latent`` at 32x32, ``small-latent`` at 64x64) a fresh process trains
the profile on synthetic CT-like slices (smooth discs with structure) and
reports autoencoder and diffusion training throughput (images/s, from the last
epoch; the first includes warm-up), then samples with 1000-step DDPM, 50-step
DDIM and 20-step DPM-Solver++ and reports per-image rates, the speed-up over
DDPM and, for each sampler, the Fréchet distance in the site's own encoder
space (not Inception-FID) to held-out real slices and to the DDPM samples.
The DDPM case draws fewer images (it is ~50x slower per image).

By default the training epochs are cut (``--epochs-scale``) so the whole script
takes a few minutes on 2 cores; quality numbers are then for an
under-trained model and only comparable within a row.

    python benchmarks/ldm.py                       # tiny-latent + small-latent
    python benchmarks/ldm.py --profiles tiny-latent --epochs-scale 1
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def slices(n: int, size: int, seed: int) -> np.ndarray:
    """CT-like test slices: a body disc with organs and a bright spine, random placement."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    out = np.empty((n, size, size), np.float32)
    for i in range(n):
        cy, cx = rng.uniform(0.45, 0.55, 2)
        ry, rx = rng.uniform(0.3, 0.4, 2)
        body = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        img = 0.05 + 0.45 / (1 + np.exp((np.sqrt(body) - 1) * 30))
        for _ in range(3):
            oy, ox = cy + rng.uniform(-0.15, 0.15), cx + rng.uniform(-0.2, 0.2)
            img += rng.uniform(-0.15, 0.15) * np.exp(-((yy - oy) ** 2 + (xx - ox) ** 2) / rng.uniform(0.002, 0.01))
        img += 0.4 * np.exp(-((yy - cy - ry * 0.7) ** 2 + (xx - cx) ** 2) / 0.002)
        out[i] = np.clip(img, 0, 1)
    return out


def _run(profile: str, n_train: int, epochs_scale: float, n_fast: int, n_ddpm: int, q: mp.Queue) -> None:
    import torch

    from fedsynth.generative import load_generator, load_profile, train_ldm
    from fedsynth.generative.quality import frechet_distance

    torch.set_num_threads(2)
    base = load_profile(profile)
    cfg = load_profile(profile, ae_epochs=max(2, round(base.ae_epochs * epochs_scale)),
                       unet_epochs=max(2, round(base.unet_epochs * epochs_scale)))
    size = cfg.image_size
    train, test = slices(n_train, size, 0), slices(64, size, 1)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summ = train_ldm(train, Path(tmp), cfg, progress=False)
        train_s = time.perf_counter() - t0
        ae_ips = n_train / summ["history"]["ae"][-1]["seconds"]
        un_ips = n_train / summ["history"]["unet"][-1]["seconds"]
        gen = load_generator(Path(tmp))
        real_f = gen.features(test)
        rows = {}
        ref_f = None
        for name, sampler, steps, n in (("DDPM 1000", "ddpm", 1000, n_ddpm), ("DDIM 50", "ddim", 50, n_fast),
                                        ("DPM-Solver++ 20", "dpm", 20, n_fast)):
            t = time.perf_counter()
            x = gen.sample(n, steps=steps, seed=7, sampler=sampler, batch_size=64)
            dt = time.perf_counter() - t
            f = gen.features(x)
            if ref_f is None:
                ref_f = f
            rows[name] = {"n": n, "ips": n / dt, "fd_real": frechet_distance(f, real_f),
                          "fd_ddpm": frechet_distance(f, ref_f), "finite": bool(np.isfinite(x).all())}
    q.put({"profile": profile, "size": size, "n_train": n_train, "ae_epochs": cfg.ae_epochs,
           "unet_epochs": cfg.unet_epochs, "steps": summ["steps"], "train_s": train_s, "ae_ips": ae_ips,
           "unet_ips": un_ips, "ae_l1": summ["final_ae_l1"], "sampling": rows,
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", nargs="+", default=["tiny-latent", "small-latent"])
    ap.add_argument("--n-train", type=int, default=64, help="training slices (a bundled-cohort site has ~64)")
    ap.add_argument("--epochs-scale", type=float, default=0.1, help="fraction of the profile's epochs to run")
    ap.add_argument("--n-fast", type=int, default=64, help="images for DDIM / DPM-Solver")
    ap.add_argument("--n-ddpm", type=int, default=4, help="images for 1000-step DDPM")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    results = []
    for p in args.profiles:
        q = ctx.Queue()
        proc = ctx.Process(target=_run, args=(p, args.n_train, args.epochs_scale, args.n_fast, args.n_ddpm, q))
        proc.start()
        results.append(q.get())
        proc.join()
    print("| profile | size | AE train img/s | diffusion train img/s | train s (epochs AE/UNet) | peak RSS MiB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['profile']} | {r['size']} | {r['ae_ips']:.1f} | {r['unet_ips']:.1f} | "
              f"{r['train_s']:.1f} ({r['ae_epochs']}/{r['unet_epochs']}) | {r['peak_rss_mib']:.0f} |")
    print()
    print("| profile | sampler | images | img/s | speed-up vs DDPM 1000 | FD_ae to real | FD_ae to DDPM samples |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        base = r["sampling"]["DDPM 1000"]["ips"]
        for name, s in r["sampling"].items():
            print(f"| {r['profile']} | {name} | {s['n']} | {s['ips']:.2f} | {s['ips'] / base:.1f}x | "
                  f"{s['fd_real']:.3g} | {s['fd_ddpm']:.3g} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
