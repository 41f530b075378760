"""Pixel-space diffusion in the EDM formulation (Karras et al. 2022), on a MONAI UNet.

Why pixels: at 64 px a latent autoencoder was the generator's bottleneck —
it reconstructed the bundled CT slices at 25-34 dB while the scanner noise
a denoiser must learn sits at 40-50 dB — so below 128 px the diffusion model
works on the pixels themselves and its representation is exact. Why EDM:
its noise levels reach down to ``sigma_min`` = 0.002 (the DDPM schedules the
latent model uses start at 0.039 in unit-variance terms, far above a CT
scanner's noise of 0.01-0.02 on a [-1, 1] scale), its preconditioning keeps
the network's input and target at unit variance at every noise level, and
it needs fewer training steps for the same quality.

The preconditioning (``c_in``, ``c_skip``, ``c_out``, the noise label) and
the samplers are diffusers' (``EDMEulerScheduler``, which is DDIM written in
sigma, and ``EDMDPMSolverMultistepScheduler``); this module only feeds a
MONAI ``DiffusionModelUNet`` through them:

* images in [0, 1] are mapped to [-1, 1] (``to_model`` / ``from_model``);
* ``pixel_unshuffle`` folds each ``f x f`` block of pixels into channels
  before the UNet and ``pixel_shuffle`` unfolds its output — a lossless
  reshuffle that lets the network's first level run at half the resolution;
* training draws ``ln sigma ~ N(p_mean, p_std^2)`` and minimises the
  EDM-weighted error of the denoised image, which equals the plain mean
  squared error of the network's output against its preconditioned target;
* optional non-leaking augmentation (Karras et al. 2022, appendix): a random
  flip / transpose of the training image, whose index (0 = none) is given to
  the network as a class label; samples are drawn with label 0, so the
  augmented geometry never appears in them.

>>> edm = EDM(cfg)
>>> loss = edm.loss(unet, x0, edm.draw_sigmas(16, gen), torch.randn_like(x0)).mean()
>>> d = edm.denoise(unet, x_noisy, sigma)           # D(x; sigma), (B, 1, S, S)
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from fedsynth.errors import ConfigError
from fedsynth.generative.config import LDMConfig

__all__ = ["AUGMENTATIONS", "EDM", "build_edm_sampler", "dihedral", "from_model", "to_model"]

#: Augmentation labels: 0 is the identity, 1-7 the other flips / transposes of the square (the dihedral group).
AUGMENTATIONS = 8


def to_model(images: torch.Tensor) -> torch.Tensor:
    """Intensities in [0, 1] -> the model's [-1, 1]."""
    return images * 2.0 - 1.0


def from_model(x: torch.Tensor) -> torch.Tensor:
    """The model's [-1, 1] -> intensities in [0, 1], clipped."""
    return ((x + 1.0) * 0.5).clamp_(0.0, 1.0)


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """One of the 8 flips / transposes of the last two axes (bit 4: transpose, 1: flip columns, 2: flip rows)."""
    if k & 4:
        x = x.transpose(-1, -2)
    if k & 1:
        x = x.flip(-1)
    if k & 2:
        x = x.flip(-2)
    return x


def _scheduler_kwargs(cfg: LDMConfig) -> dict[str, Any]:
    return dict(sigma_min=cfg.sigma_min, sigma_max=cfg.sigma_max, sigma_data=cfg.sigma_data,
                sigma_schedule="karras", prediction_type="epsilon")


def build_edm_sampler(cfg: LDMConfig, sampler: str, steps: int) -> Any:
    """A diffusers EDM scheduler with ``set_timesteps(steps)`` called (Karras sigmas, final sigma 0).

    ``ddim``: Euler on the probability-flow ODE (DDIM in sigma form, deterministic);
    ``dpm``: DPM-Solver++ 2nd-order multistep (deterministic). Ancestral DDPM sampling
    belongs to the latent model's DDPM objective and is refused here.
    """
    from diffusers import EDMDPMSolverMultistepScheduler, EDMEulerScheduler

    if steps < 2 or steps > 1000:
        raise ConfigError(f"sampling steps must be in [2, 1000] for the pixel generator, got {steps}")
    if sampler == "ddim":
        sched = EDMEulerScheduler(**_scheduler_kwargs(cfg))
    elif sampler == "dpm":
        sched = EDMDPMSolverMultistepScheduler(**_scheduler_kwargs(cfg), algorithm_type="dpmsolver++",
                                               solver_order=2)
    elif sampler == "ddpm":
        raise ConfigError("the pixel generator samples with ddim (Euler) or dpm (DPM-Solver++); ancestral ddpm "
                          "sampling belongs to the latent generator")
    else:
        raise ConfigError(f"unknown sampler {sampler!r}; expected ddim or dpm")
    sched.set_timesteps(steps)
    return sched


class EDM:
    """EDM preconditioning of a MONAI UNet on (optionally pixel-unshuffled) images in [-1, 1]."""

    def __init__(self, cfg: LDMConfig) -> None:
        from diffusers import EDMEulerScheduler

        self.cfg = cfg
        self.f = cfg.pixel_unshuffle
        # the library's preconditioning (c_in, c_skip, c_out); the sampler schedules are built per call
        self._pre = EDMEulerScheduler(**_scheduler_kwargs(cfg))
        self._lo, self._hi = math.log(cfg.sigma_min), math.log(cfg.sigma_max)

    def noise_label(self, sigma: torch.Tensor) -> torch.Tensor:
        """ln sigma mapped linearly so that [sigma_min, sigma_max] spans [0, 1000]: the range of the DDPM
        timesteps MONAI's sinusoidal embedding was built for (EDM's own 0.25 ln sigma spans only ~2.6)."""
        return 1000.0 * (torch.log(sigma) - self._lo) / (self._hi - self._lo)

    def output(self, unet: torch.nn.Module, x: torch.Tensor, sigma: torch.Tensor,
               labels: torch.Tensor | None = None) -> torch.Tensor:
        """The raw network output F at noise level ``sigma`` (per image), same shape as ``x``: what the
        diffusers EDM schedulers' ``step`` takes as ``model_output``."""
        return self.raw(unet, self._pre.precondition_inputs(x, sigma.view(-1, 1, 1, 1)), sigma, labels)

    def raw(self, unet: torch.nn.Module, scaled: torch.Tensor, sigma: torch.Tensor,
            labels: torch.Tensor | None = None) -> torch.Tensor:
        """F from an input already scaled by ``c_in`` (a scheduler's ``scale_model_input``)."""
        inp = F.pixel_unshuffle(scaled, self.f) if self.f > 1 else scaled
        if labels is None and self.cfg.augment_p > 0:
            labels = torch.zeros(len(scaled), dtype=torch.long, device=scaled.device)
        out = unet(inp, timesteps=self.noise_label(sigma), class_labels=labels)
        return F.pixel_shuffle(out, self.f) if self.f > 1 else out

    def denoised(self, x: torch.Tensor, output: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """D(x; sigma) from the network's raw ``output`` (EDM's skip connection and output scaling)."""
        return self._pre.precondition_outputs(x, output.float(), sigma.view(-1, 1, 1, 1))

    def denoise(self, unet: torch.nn.Module, x: torch.Tensor, sigma: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        """D(x; sigma): the network's estimate of the clean image from ``x`` at noise level ``sigma``."""
        return self.denoised(x, self.output(unet, x, sigma, labels), sigma)

    def loss(self, unet: torch.nn.Module, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
             labels: torch.Tensor | None = None) -> torch.Tensor:
        """Per-image EDM loss ``lambda(sigma) |D(x0 + sigma n; sigma) - x0|^2`` (mean over pixels), (B,).

        With EDM's weight ``lambda = 1 / c_out^2`` this is the mean squared
        error of the network output against its preconditioned target, of
        order 1 at every noise level.
        """
        s = sigma.view(-1, 1, 1, 1)
        d = self.denoise(unet, x0 + s * noise, sigma, labels)
        sd = self.cfg.sigma_data
        weight = (s ** 2 + sd ** 2) / (s * sd) ** 2
        return (weight * (d - x0) ** 2).mean(dim=(1, 2, 3))

    def draw_sigmas(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Training noise levels: ln sigma ~ N(p_mean, p_std^2)."""
        return torch.exp(torch.randn(n, generator=generator) * self.cfg.p_std + self.cfg.p_mean)

    def heldout_sigmas(self, k: int = 8) -> torch.Tensor:
        """``k`` fixed noise levels at the quantiles (i + 0.5) / k of the training distribution: a
        deterministic estimate of the expected training loss on held-out images."""
        q = (torch.arange(k, dtype=torch.float64) + 0.5) / k
        z = math.sqrt(2.0) * torch.erfinv(2 * q - 1)
        return torch.exp(z * self.cfg.p_std + self.cfg.p_mean).float()
