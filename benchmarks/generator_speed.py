"""Generator training throughput on this CPU: images/s per network and setting, and the share of the conv probe.

Why: the generator is the study's slowest phase, and "enough diffusion
training" is bought with throughput. For the diffusion UNet of each profile
(``small``: pixel, 2 x 2 unshuffled; ``small-latent``: the latent UNet and its
autoencoder) this times full training steps (forward, backward, AdamW, as
``train_ldm`` runs them) under the obvious alternatives — threads, batch size,
``channels_last`` memory format, ``torch.compile`` (inductor on the CPU) — each
in a fresh process, and reports images/s, the ratio to the plain setting, and
the effective GFLOP/s (3 x the forward FLOPs counted by
``torch.utils.flop_counter``) as a share of the machine's conv probe measured in
the same run. Writes ``--report`` (JSON) for ``benchmarks/render_docs.py``.

    python benchmarks/generator_speed.py --report docs/results/generator_speed.json
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: (network, profile, setting name, threads, batch, channels_last, compile)
CASES: list[tuple[str, str, str, int, int, bool, bool]] = [
    ("pixel UNet", "small", "plain (2 threads, batch 16)", 2, 16, False, False),
    ("pixel UNet", "small", "1 thread", 1, 16, False, False),
    ("pixel UNet", "small", "batch 8", 2, 8, False, False),
    ("pixel UNet", "small", "batch 32", 2, 32, False, False),
    ("pixel UNet", "small", "channels_last", 2, 16, True, False),
    ("pixel UNet", "small", "torch.compile", 2, 16, False, True),
    ("latent UNet", "small-latent", "plain (2 threads, batch 16)", 2, 16, False, False),
    ("latent autoencoder", "small-latent", "plain (2 threads, batch 16, 32-px crops)", 2, 16, False, False),
]


def _measure(net: str, profile: str, threads: int, batch: int, channels_last: bool, compiled: bool,
             seconds: float, q: mp.Queue) -> None:
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from fedsynth.generative import load_profile
    from fedsynth.generative.edm import EDM
    from fedsynth.generative.networks import build_autoencoder, build_unet

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = load_profile(profile)
    g = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if net == "latent autoencoder":
        model = build_autoencoder(cfg)
        x = torch.rand(batch, 1, cfg.ae_patch_size, cfg.ae_patch_size, generator=g).to(memory_format=fmt)

        def loss_fn(m: Any) -> Any:
            mu, sigma = m.encode(x)
            return F.l1_loss(m.decode(mu + sigma * torch.randn_like(mu)), x)
    elif net == "pixel UNet":
        model, edm = build_unet(cfg), EDM(cfg)
        x = (torch.rand(batch, 1, cfg.image_size, cfg.image_size, generator=g) * 2 - 1).to(memory_format=fmt)
        labels = torch.randint(0, 8, (batch,), generator=g)
        sig = edm.draw_sigmas(batch, g)
        n = torch.randn(x.shape, generator=g)

        def loss_fn(m: Any) -> Any:
            return edm.loss(m, x, sig, n, labels).mean()
    else:
        model = build_unet(cfg)
        s = cfg.latent_size
        x = torch.randn(batch, cfg.latent_channels, s, s, generator=g).to(memory_format=fmt)
        t = torch.randint(0, 1000, (batch,), generator=g)

        def loss_fn(m: Any) -> Any:
            return F.mse_loss(m(x, timesteps=t), x)
    model = model.to(memory_format=fmt)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        loss_fn(model)
    flops_fwd = fc.get_total_flops() / batch
    run = torch.compile(model) if compiled else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    t0 = time.perf_counter()
    for _ in range(2):  # warm-up (and compilation)
        opt.zero_grad()
        loss_fn(run).backward()
        opt.step()
    warm = time.perf_counter() - t0
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or steps < 3:
        opt.zero_grad()
        loss_fn(run).backward()
        opt.step()
        steps += 1
    dt = time.perf_counter() - t0
    q.put({"images_per_second": steps * batch / dt, "forward_gflop_per_image": flops_fwd / 1e9,
           "warmup_seconds": warm, "steps": steps})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="timed training per case (after warm-up)")
    ap.add_argument("--report", type=Path, help="write the results as JSON")
    args = ap.parse_args()
    from fedsynth.machine_speed import machine_speed

    ctx = mp.get_context("spawn")
    probes = [machine_speed(seconds=2.0)["conv_gflops"]]
    rows = []
    for net, profile, name, threads, batch, cl, comp in CASES:
        q: mp.Queue = ctx.Queue()
        p = ctx.Process(target=_measure, args=(net, profile, threads, batch, cl, comp, args.seconds, q))
        p.start()
        res = q.get()
        p.join()
        rows.append({"network": net, "profile": profile, "setting": name, "threads": threads, "batch": batch,
                     "channels_last": cl, "compile": comp, **res})
    probes.append(machine_speed(seconds=2.0)["conv_gflops"])
    probe = sum(probes) / len(probes)
    base = {}
    print(f"\nconv probe {probe:.1f} GFLOP/s (before {probes[0]:.1f}, after {probes[1]:.1f})\n")
    print("| network | setting | images/s | × plain | forward GFLOP/image | effective GFLOP/s | share of probe | "
          "warm-up s |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        base.setdefault(r["network"], r["images_per_second"])
        eff = 3 * r["forward_gflop_per_image"] * r["images_per_second"]
        r.update(ratio=r["images_per_second"] / base[r["network"]], effective_gflops=eff, probe_share=eff / probe)
        print(f"| {r['network']} | {r['setting']} | {r['images_per_second']:.1f} | {r['ratio']:.2f} | "
              f"{r['forward_gflop_per_image']:.3f} | {eff:.1f} | {r['probe_share']:.0%} | {r['warmup_seconds']:.1f} |")
    if args.report:
        from fedsynth.io_utils import write_json_atomic

        write_json_atomic(args.report, {"conv_probe_gflops": probe, "probes": probes, "rows": rows,
                                        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                        "seconds_per_case": args.seconds})


if __name__ == "__main__":
    main()
