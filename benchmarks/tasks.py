"""Benchmark the downstream-task hot paths; prints markdown tables.

1. Low-dose CT simulation (project -> Poisson -> FBP) with the batched torch
   projector vs scikit-image radon/iradon (the obvious alternative), images/s
   and ratio, at 64x64 (and 128x128).
2. Network throughput per network at 64x64: training images/s (Adam step on
   64x64 inputs, batch 16) and inference images/s, parameter count.
3. The default TaskConfig end to end: train_network on synthetic 64x64 CT-like
   images, seconds and test PSNR gain over the low-dose input.

    python benchmarks/tasks.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixtures.images import body_discs  # noqa: E402

from fedsynth.tasks import TaskConfig, build_network, evaluate_network, low_dose_ct, train_network  # noqa: E402


def _rate(fn, n_items: int, min_seconds: float = 1.0) -> float:
    fn()  # warm-up (grids, caches)
    t0, reps = time.perf_counter(), 0
    while True:
        fn()
        reps += 1
        dt = time.perf_counter() - t0
        if dt >= min_seconds:
            return n_items * reps / dt


def projector_table(sizes: list[int], quick: bool) -> str:
    lines = ["| image | torch (images/s) | scikit-image (images/s) | torch / skimage |", "| --- | ---: | ---: | ---: |"]
    for size in sizes:
        n_t = 32
        n_s = 2 if size > 64 else 4
        x = body_discs(n_t, size)
        t = _rate(lambda x=x: low_dose_ct(x, dose_fraction=0.25, projector="torch"), n_t, 0.5 if quick else 2.0)
        s = _rate(lambda x=x[:n_s]: low_dose_ct(x, dose_fraction=0.25, projector="skimage"), n_s,
                  0.5 if quick else 2.0)
        lines.append(f"| {size}×{size} | {t:.1f} | {s:.1f} | {t / s:.1f}× |")
    return "\n".join(lines)


NETS = [
    ("ldct", "rednet", None, "RED-CNN default (16 ch)"),
    ("ldct", "rednet", 96, "RED-CNN paper (96 ch)"),
    ("ldct", "unet", None, "MONAI BasicUNet residual (16)"),
    ("ldct", "edsr", None, "EDSR-style ×1 (32 ch, 8 blocks)"),
    ("sr", "srcnn", None, "SRCNN 9-5-5 (64/32)"),
    ("sr", "edsr", None, "EDSR-style ×2 (32 ch, 8 blocks)"),
]


def network_table(quick: bool) -> str:
    lines = ["| network | params | train (images/s, 64×64, batch 16) | inference (images/s) |",
             "| --- | ---: | ---: | ---: |"]
    for task, net, ch, label in NETS:
        cfg = TaskConfig(task=task, network=net, channels=ch)
        model = build_network(cfg)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        x = torch.rand(16, 1, 64, 64)
        y = torch.rand(16, 1, 64, 64)

        def step(model=model, opt=opt, x=x, y=y) -> None:
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()

        def infer(model=model, x=x) -> None:
            with torch.no_grad():
                model(x)

        tr = _rate(step, 16, 0.5 if quick else 2.0)
        inf = _rate(infer, 16, 0.5 if quick else 2.0)
        params = sum(p.numel() for p in model.parameters())
        lines.append(f"| {label} | {params / 1e3:.0f} k | {tr:.1f} | {inf:.1f} |")
    return "\n".join(lines)


def default_run_table(n_train: int, n_test: int) -> str:
    lines = ["| task / network | train images | epochs run | seconds | input PSNR (dB) | output PSNR (dB) | gain |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    train, test = body_discs(n_train, 64, seed=1), body_discs(n_test, 64, seed=2)
    for task in ("ldct", "sr"):
        cfg = TaskConfig(task=task)
        t0 = time.perf_counter()
        model, hist = train_network(train, cfg, progress=False)
        sec = time.perf_counter() - t0
        m = evaluate_network(model, test, cfg, seed=123)
        a, b = float(m["input_psnr"].mean()), float(m["psnr"].mean())
        lines.append(f"| {task} / {cfg.network} | {n_train} | {len(hist['epochs'])} | {sec:.1f} | {a:.2f} | {b:.2f} "
                     f"| {b - a:+.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter timing loops, 64x64 projector only")
    ap.add_argument("--skip-default-run", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("### Low-dose CT simulation (project, Poisson, FBP), dose 1/4\n")
    print(projector_table([64] if args.quick else [64, 128], args.quick))
    print("\n### Network throughput at 64×64\n")
    print(network_table(args.quick))
    if not args.skip_default_run:
        print("\n### Default TaskConfig, train_network end to end (synthetic 64×64 CT-like blobs)\n")
        print(default_run_table(96, 16))


if __name__ == "__main__":
    main()
