"""The site generator: a latent diffusion model each site trains on its own scans.

>>> train_ldm(store.train_images(), Path("work/gen"), load_profile("small", image_size=64))
>>> images = load_generator(Path("work/gen")).sample(200, seed=0)  # (200, 64, 64) float32, [0, 1]

Heavy imports (torch, MONAI, diffusers) happen on first use of these names
(:func:`fedsynth.lazy.lazy_exports`). See ``docs/generative.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedsynth.lazy import lazy_exports

exports = {
    "PROFILES": "fedsynth.generative.config",
    "LDMConfig": "fedsynth.generative.config",
    "LatentDiffusionGenerator": "fedsynth.generative.sample",
    "evaluate_quality": "fedsynth.generative.quality",
    "load_generator": "fedsynth.generative.sample",
    "load_profile": "fedsynth.generative.config",
    "train_ldm": "fedsynth.generative.train",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, exports)

if TYPE_CHECKING:  # pragma: no cover
    from fedsynth.generative.config import PROFILES, LDMConfig, load_profile  # noqa: F401
    from fedsynth.generative.quality import evaluate_quality  # noqa: F401
    from fedsynth.generative.sample import LatentDiffusionGenerator, load_generator  # noqa: F401
    from fedsynth.generative.train import train_ldm  # noqa: F401
