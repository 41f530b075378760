"""The site generator: a latent diffusion model each site trains on its own scans.

>>> cfg = load_profile("small", image_size=64)
>>> train_ldm(store.train_images(), Path("work/gen"), cfg, resume=True)
>>> gen = load_generator(Path("work/gen"))
>>> images = gen.sample(200, steps=50, seed=0)     # (200, 64, 64) float32 in [0, 1]

Heavy imports (torch, MONAI, diffusers) happen on first use of these names.
See ``docs/generative.md``.
"""

from __future__ import annotations

from typing import Any

from fedsynth.generative.config import PROFILES, LDMConfig, load_profile

__all__ = [
    "PROFILES",
    "LDMConfig",
    "LatentDiffusionGenerator",
    "evaluate_quality",
    "load_generator",
    "load_profile",
    "train_ldm",
]

_LAZY = {
    "train_ldm": "fedsynth.generative.train",
    "load_generator": "fedsynth.generative.sample",
    "LatentDiffusionGenerator": "fedsynth.generative.sample",
    "evaluate_quality": "fedsynth.generative.quality",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fedsynth.generative' has no attribute {name!r}")
