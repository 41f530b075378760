"""How fast this machine does the study's kind of work, measured, so a report's wall times can be read.

Why: identical 2-core machines differ by up to 2.5x on convolutions; a wall
time without the machine's speed beside it says little. The probe is the
study's own workload in miniature — a RED-CNN-sized 5x5 convolution layer,
forward and backward, on a batch of 64x64 slices, with the process's torch
thread count — timed for about a second after a warm-up, and reported as
GFLOP/s with the CPU model, core count and torch version.

    >>> machine_speed()["conv_gflops"]
    14.2
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

__all__ = ["machine_speed"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_speed(seconds: float = 1.0, threads: int | None = None) -> dict[str, Any]:
    """Measured conv throughput (GFLOP/s, forward + backward) and what the machine is; takes about ``seconds``."""
    import torch

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(16, 16, 64, 64, generator=gen, requires_grad=True)
        conv = torch.nn.Conv2d(16, 16, 5, padding=2)
        flops_fwd = 2 * 16 * 64 * 64 * 16 * 16 * 25  # batch x pixels x in x out x taps x (mul + add)
        conv(x).sum().backward()  # warm-up
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or n < 2:
            conv(x).sum().backward()
            n += 1
        dt = time.perf_counter() - t0
        return {"conv_gflops": round(3 * flops_fwd * n / dt / 1e9, 2),  # backward ~ 2x forward
                "threads": torch.get_num_threads(), "cpu": _cpu_model(), "cores": os.cpu_count(),
                "torch": torch.__version__, "probe": "5x5 conv 16->16 ch, 16 x 64x64, forward+backward"}
    finally:
        torch.set_num_threads(old)
