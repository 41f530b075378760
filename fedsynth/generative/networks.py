"""Build the LDM's networks and noise schedulers from an :class:`LDMConfig`.

The networks are MONAI's (``AutoencoderKL``, ``DiffusionModelUNet``,
``PatchDiscriminator``); the schedulers are diffusers' (DDPM for the training
objective, DDIM / DPM-Solver++ / DDPM for sampling), which all operate on
torch tensors of any shape and share one beta schedule built from the config.

>>> ae, unet = build_autoencoder(cfg), build_unet(cfg)
>>> sched = build_sampler(cfg, "dpm", steps=20)
"""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet, PatchDiscriminator

from fedsynth.errors import ConfigError
from fedsynth.generative.config import LDMConfig

__all__ = [
    "build_autoencoder",
    "build_discriminator",
    "build_noise_scheduler",
    "build_sampler",
    "build_unet",
    "encoder_features",
]


def build_autoencoder(cfg: LDMConfig) -> AutoencoderKL:
    """(B, 1, S, S) images <-> (B, latent_channels, S/f, S/f) latents, f = 2**(levels-1)."""
    n = len(cfg.ae_channels)
    return AutoencoderKL(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=cfg.ae_channels,
        latent_channels=cfg.latent_channels,
        num_res_blocks=cfg.ae_num_res_blocks,
        attention_levels=(False,) * (n - 1) + (cfg.ae_attention,),
        norm_num_groups=cfg.ae_norm_groups,
        with_encoder_nonlocal_attn=cfg.ae_attention,
        with_decoder_nonlocal_attn=cfg.ae_attention,
    )


def build_unet(cfg: LDMConfig) -> DiffusionModelUNet:
    """The diffusion network: (B, C, s, s), timesteps (B,) [, class labels (B,)] -> (B, C, s, s).

    Latent: C = latent channels, predicts noise or v. Pixel: C = pixel_unshuffle**2
    (each channel one pixel of an f x f block), EDM's preconditioned output; with
    augmentation the class labels say which flip/transpose the input had.
    """
    from fedsynth.generative.edm import AUGMENTATIONS

    heads = [cfg.unet_head_channels if a else 0 for a in cfg.unet_attention]
    return DiffusionModelUNet(
        spatial_dims=2,
        in_channels=cfg.diffusion_channels,
        out_channels=cfg.diffusion_channels,
        channels=cfg.unet_channels,
        attention_levels=cfg.unet_attention,
        num_res_blocks=cfg.unet_num_res_blocks,
        norm_num_groups=cfg.unet_norm_groups,
        num_head_channels=heads,
        num_class_embeds=AUGMENTATIONS if cfg.kind == "pixel" and cfg.augment_p > 0 else None,
    )


def build_discriminator(cfg: LDMConfig) -> PatchDiscriminator:
    """Patch-wise real/fake logits for the optional adversarial autoencoder loss."""
    return PatchDiscriminator(
        spatial_dims=2, channels=cfg.disc_channels, in_channels=1, out_channels=1,
        num_layers_d=cfg.disc_layers,
    )


def _schedule_kwargs(cfg: LDMConfig) -> dict[str, Any]:
    return dict(
        num_train_timesteps=cfg.train_timesteps,
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
        beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type,
    )


def build_noise_scheduler(cfg: LDMConfig) -> Any:
    """The DDPM forward process used by the training objective (``add_noise``, ``get_velocity``)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**_schedule_kwargs(cfg), clip_sample=False)


def build_sampler(cfg: LDMConfig, sampler: str, steps: int) -> Any:
    """A diffusers scheduler with ``set_timesteps(steps)`` already called.

    ``ddim`` (eta 0, deterministic), ``dpm`` (DPM-Solver++ 2nd order multistep,
    deterministic) or ``ddpm`` (ancestral, always ``train_timesteps`` steps).
    Latents are unit-scaled, so sample clipping is off.
    """
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    kw = _schedule_kwargs(cfg)
    if steps < 1 or steps > cfg.train_timesteps:
        raise ConfigError(f"sampling steps must be in [1, {cfg.train_timesteps}], got {steps}")
    if sampler == "ddim":
        sched = DDIMScheduler(**kw, clip_sample=False, set_alpha_to_one=False, timestep_spacing="trailing")
    elif sampler == "dpm":
        sched = DPMSolverMultistepScheduler(
            **kw, algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="trailing",
            lower_order_final=True,
        )
    elif sampler == "ddpm":
        sched = DDPMScheduler(**kw, clip_sample=False)
        steps = cfg.train_timesteps
    else:
        raise ConfigError(f"unknown sampler {sampler!r}; expected ddim, dpm or ddpm")
    sched.set_timesteps(steps)
    return sched


def encoder_features(ae: AutoencoderKL, x: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, S) -> (B, 2*C) per-channel spatial mean and std of the encoder's last hidden map.

    The feature space for the Fréchet distance in :mod:`fedsynth.generative.quality`:
    the deepest feature map of the site's own encoder, before the final
    normalisation and the projection to the latent.
    """
    h = x
    for block in ae.encoder.blocks:
        if isinstance(block, torch.nn.GroupNorm):
            break
        h = block(h)
    return torch.cat([h.mean(dim=(2, 3)), h.std(dim=(2, 3))], dim=1)
