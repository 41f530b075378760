"""The latent diffusion model's configuration and its named profiles.

Every size, step count and learning rate of the site generator is a field of
:class:`LDMConfig`; code never hard-codes them. The config is stored inside
every checkpoint as JSON, so :func:`fedsynth.generative.load_generator` can
rebuild the networks without the original command line.

>>> cfg = load_profile("small", unet_epochs=200)
>>> cfg.kind, cfg.image_size, cfg.sample_steps
('pixel', 64, 25)
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from fedsynth.config import StrictModel, validate
from fedsynth.errors import ConfigError

__all__ = ["PROFILES", "LDMConfig", "load_profile"]

Sampler = Literal["ddim", "dpm", "ddpm"]


class LDMConfig(StrictModel):
    """The site generator: a diffusion UNet on pixels (``kind = "pixel"``) or on an autoencoder's latents.

    ``pixel``: EDM diffusion on the slices themselves (``fedsynth.generative.edm``), the
    representation is exact; the ``ae_*``, ``latent_channels``, DDPM-schedule and texture fields are
    unused. ``latent``: KL autoencoder + DDPM diffusion on its latents + a fitted texture (the
    ``256 px and up`` path, where pixel-space training is out of reach on a CPU).
    """

    profile: str = Field("custom", description="name of the profile this config started from")
    kind: Literal["latent", "pixel"] = Field(
        "latent", description="pixel: EDM diffusion on the pixels (exact representation); latent: autoencoder + "
        "latent diffusion (checkpoints written before 'kind' existed are latent)")
    image_size: int = Field(64, ge=16, le=1024, description="edge length the model trains and samples at; inputs are resized")
    seed: int = Field(0, ge=0, description="seeds initialisation, batch order, noise; CPU runs are deterministic")

    # autoencoder (MONAI AutoencoderKL)
    ae_channels: tuple[int, ...] = Field((16, 32, 64), min_length=2, max_length=5)
    ae_num_res_blocks: int = Field(1, ge=1, le=4)
    ae_attention: bool = Field(False, description="self-attention at the deepest level and mid block")
    ae_norm_groups: int = Field(16, ge=1)
    latent_channels: int = Field(4, ge=1, le=16)
    ae_epochs: int = Field(50, ge=1)
    ae_batch_size: int = Field(16, ge=1)
    ae_lr: float = Field(1e-3, gt=0.0, lt=1.0)
    ae_patch_size: int | None = Field(None, ge=8, description="train the AE on random square crops of this size (None: whole images)")
    ae_full_fraction: float = Field(0.0, ge=0.0, le=1.0, description="with ae_patch_size: the last "
                                    "round(fraction * ae_epochs) AE epochs use whole images (GroupNorm then sees "
                                    "whole-slice statistics, as when encoding)")
    kl_weight: float = Field(1e-6, ge=0.0)
    adv_weight: float = Field(0.0, ge=0.0, description="PatchDiscriminator loss weight; 0 disables it")
    adv_start_epoch: int = Field(0, ge=0, description="AE epoch from which the adversarial loss is on")
    disc_channels: int = Field(32, ge=4)
    disc_layers: int = Field(3, ge=1, le=5)

    # diffusion UNet (MONAI DiffusionModelUNet) on latents
    unet_channels: tuple[int, ...] = Field((32, 64, 128), min_length=1, max_length=5)
    unet_attention: tuple[bool, ...] = Field((False, True, True))
    unet_num_res_blocks: int = Field(1, ge=1, le=4)
    unet_norm_groups: int = Field(32, ge=1)
    unet_head_channels: int = Field(32, ge=1, description="channels per attention head")
    unet_epochs: int = Field(150, ge=1)
    unet_batch_size: int = Field(32, ge=1)
    unet_lr: float = Field(5e-4, gt=0.0, lt=1.0)
    ema_decay: float = Field(0.995, ge=0.0, lt=1.0, description="EMA of UNet weights (warmed up: min(decay, (1+n)/(10+n)))")
    val_every: int = Field(0, ge=0, description="UNet epochs between validation checks: the EMA UNet's diffusion "
                           "loss on the validation patients' slices at fixed noise levels; the best EMA weights are "
                           "kept and training stops after val_patience checks without a lower loss. 0: no "
                           "validation, unet_epochs are trained (unet_epochs is the maximum either way)")
    val_patience: int = Field(3, ge=1, description="validation checks without a lower held-out loss before stopping")

    # pixel-space diffusion (kind = "pixel"): EDM preconditioning and training noise levels
    pixel_unshuffle: int = Field(2, ge=1, le=4, description="fold f x f pixel blocks into channels before the "
                                 "UNet (lossless; its first level runs at 1/f resolution)")
    sigma_min: float = Field(0.002, gt=0.0, description="smallest sampling noise level (images on [-1, 1])")
    sigma_max: float = Field(80.0, gt=0.0, description="largest sampling noise level")
    sigma_data: float = Field(0.5, gt=0.0, description="EDM's assumed data standard deviation")
    p_mean: float = Field(-1.2, description="training noise levels: ln sigma ~ N(p_mean, p_std^2)")
    p_std: float = Field(1.2, gt=0.0)
    augment_p: float = Field(0.0, ge=0.0, lt=1.0, description="probability of a non-leaking flip/transpose "
                             "augmentation (its index is the UNet's class label; samples use label 0)")
    companion_sigma: float = Field(0.05, gt=0.0, description="pixel generator: the untextured companion of each "
                                   "sample is its denoised estimate D(x; sigma) at the last sampling step at or "
                                   "above this noise level (images on [-1, 1]; above the scanner's noise)")

    # optimisation, shared
    weight_decay: float = Field(1e-4, ge=0.0)
    warmup_steps: int = Field(50, ge=0, description="linear LR warm-up, then cosine decay to lr_min_ratio*lr")
    lr_min_ratio: float = Field(0.1, ge=0.0, le=1.0)
    grad_clip: float = Field(1.0, gt=0.0)
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present, else CPU")
    amp: bool = Field(True, description="bfloat16 autocast; only takes effect on CUDA")
    compile: bool = Field(True, description="torch.compile the UNet; only takes effect on CUDA")
    checkpoint_every: int = Field(1, ge=1, description="epochs between checkpoints (1: after every epoch)")

    # noise schedule (DDPM objective) and sampling
    train_timesteps: int = Field(1000, ge=10, le=4000)
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "scaled_linear"
    beta_start: float = Field(0.0015, gt=0.0, lt=1.0)
    beta_end: float = Field(0.0195, gt=0.0, lt=1.0)
    prediction_type: Literal["epsilon", "v_prediction"] = Field(
        "v_prediction",
        description="v_prediction (default): the clean latent implied by the prediction stays bounded at high noise "
                    "levels; with epsilon and a schedule ending at alpha_bar ~1.5e-4 an under-trained UNet's small "
                    "noise errors are amplified ~80x there and samples come out with ~2-3x too wide latents")
    sampler: Sampler = Field("ddim", description="ddim | dpm (DPM-Solver++) | ddpm (all train_timesteps steps)")
    sample_steps: int = Field(50, ge=1, le=4000)
    sample_batch_size: int = Field(64, ge=1)
    restore_texture: bool = Field(True, description="add in-body noise with the power spectrum of what the "
                                  "autoencoder leaves out of the training slices (fedsynth.generative.texture)")

    @model_validator(mode="after")
    def _consistent(self) -> LDMConfig:
        for name, chans, groups in (
            ("ae_channels", self.ae_channels, self.ae_norm_groups),
            ("unet_channels", self.unet_channels, self.unet_norm_groups),
        ):
            bad = [c for c in chans if c < 1 or c % groups]
            if bad:
                raise ValueError(f"{name} must be positive multiples of the norm groups ({groups}), got {bad[0]}")
        if len(self.unet_attention) != len(self.unet_channels):
            raise ValueError("unet_attention needs one flag per unet_channels level")
        for c, a in zip(self.unet_channels, self.unet_attention, strict=True):
            if a and c % self.unet_head_channels:
                raise ValueError(f"unet channels {c} with attention must be a multiple of unet_head_channels")
        if self.kind == "pixel":
            return self._pixel_consistent()
        if self.augment_p > 0:
            raise ValueError("augment_p needs kind = 'pixel' (the latent model trains on cached latents)")
        down = 2 ** (len(self.ae_channels) - 1)
        if self.image_size % down:
            raise ValueError(f"image_size must be divisible by {down} (2 ** (len(ae_channels) - 1))")
        latent = self.image_size // down
        if latent % 2 ** (len(self.unet_channels) - 1):
            raise ValueError(f"latent size {latent} must be divisible by 2 ** (len(unet_channels) - 1)")
        if self.ae_patch_size is not None and (self.ae_patch_size > self.image_size or self.ae_patch_size % down):
            raise ValueError(f"ae_patch_size must be <= image_size and divisible by {down}")
        if self.beta_end <= self.beta_start:
            raise ValueError("beta_end must be greater than beta_start")
        if self.sample_steps > self.train_timesteps:
            raise ValueError("sample_steps cannot exceed train_timesteps")
        return self

    def _pixel_consistent(self) -> LDMConfig:
        if self.image_size % self.pixel_unshuffle:
            raise ValueError(f"image_size must be divisible by pixel_unshuffle ({self.pixel_unshuffle})")
        grid = self.image_size // self.pixel_unshuffle
        if grid % 2 ** (len(self.unet_channels) - 1):
            raise ValueError(f"image_size / pixel_unshuffle = {grid} must be divisible by "
                             f"2 ** (len(unet_channels) - 1)")
        if self.restore_texture:
            raise ValueError("restore_texture is for the latent generator; the pixel generator models the "
                             "scanner's noise itself")
        if self.sampler == "ddpm":
            raise ValueError("the pixel generator samples with ddim or dpm")
        if self.sigma_max <= self.sigma_min:
            raise ValueError("sigma_max must be greater than sigma_min")
        return self

    @property
    def latent_size(self) -> int:
        """Edge length of the grid the diffusion model draws (the latent grid, or the image for pixels)."""
        if self.kind == "pixel":
            return self.image_size
        return self.image_size // 2 ** (len(self.ae_channels) - 1)

    @property
    def diffusion_channels(self) -> int:
        """Channels of the UNet's input and output."""
        return self.pixel_unshuffle ** 2 if self.kind == "pixel" else self.latent_channels


#: Named starting points. ``tiny``: tests (seconds); ``small``: one site of the
#: bundled cohort (64 px) on 2 CPU cores, pixel-space EDM diffusion stopped by
#: its held-out loss; ``paper``: GPU, the latent model close to the MONAI 2-D
#: latent diffusion tutorial (config only; not trainable on this CPU).
#: ``small-latent`` / ``tiny-latent`` keep the latent model at 64 / 32 px for
#: comparison and for the latent path's tests.
_LATENT_SMALL: dict[str, Any] = dict(
    kind="latent", image_size=64, ae_channels=(16, 32, 64), ae_norm_groups=16, latent_channels=4,
    ae_epochs=160, ae_batch_size=16, ae_lr=1e-3, ae_patch_size=32, ae_full_fraction=0.2,
    unet_channels=(32, 64, 64), unet_attention=(False, False, True), unet_norm_groups=16,
    unet_head_channels=32, unet_epochs=150, unet_batch_size=16, unet_lr=1e-3,
    ema_decay=0.99, warmup_steps=10, train_timesteps=1000, sample_steps=50,
)
_LATENT_TINY: dict[str, Any] = dict(
    kind="latent", image_size=32, ae_channels=(8, 16), ae_norm_groups=8, latent_channels=2,
    ae_epochs=6, ae_batch_size=8, ae_lr=2e-3,
    unet_channels=(16, 32), unet_attention=(False, True), unet_norm_groups=8,
    unet_head_channels=16, unet_epochs=4, unet_batch_size=8, unet_lr=1e-3,
    ema_decay=0.9, warmup_steps=2, train_timesteps=1000, sample_steps=10, sample_batch_size=32,
)
PROFILES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        kind="pixel", image_size=32, pixel_unshuffle=2, restore_texture=False, sampler="dpm",
        unet_channels=(16, 32), unet_attention=(False, True), unet_norm_groups=8, unet_head_channels=16,
        unet_epochs=6, unet_batch_size=8, unet_lr=1e-3, ema_decay=0.9, warmup_steps=2, augment_p=0.5,
        val_every=2, val_patience=2, sample_steps=8, sample_batch_size=32,
    ),
    "tiny-latent": _LATENT_TINY,
    "small": dict(
        kind="pixel", image_size=64, pixel_unshuffle=2, restore_texture=False, sampler="dpm",
        unet_channels=(32, 64, 64, 64), unet_attention=(False, False, False, True), unet_norm_groups=16,
        unet_head_channels=32, unet_epochs=1500, unet_batch_size=16, unet_lr=1e-3, ema_decay=0.999,
        warmup_steps=200, lr_min_ratio=1.0, augment_p=0.6, val_every=25, val_patience=4, sample_steps=25,
        checkpoint_every=5,  # ~36 MB of state every 5 epochs (40 steps at 120 slices), not every 2 s
    ),
    "small-latent": _LATENT_SMALL,
    "paper": dict(
        image_size=256, ae_channels=(128, 128, 256), ae_num_res_blocks=2, ae_norm_groups=32,
        latent_channels=3, ae_epochs=100, ae_batch_size=16, ae_lr=1e-4, kl_weight=1e-6,
        adv_weight=0.01, adv_start_epoch=10, disc_channels=64, disc_layers=3,
        unet_channels=(128, 256, 512), unet_attention=(False, True, True), unet_num_res_blocks=2,
        unet_norm_groups=32, unet_head_channels=64, unet_epochs=200, unet_batch_size=16,
        unet_lr=1e-4, ema_decay=0.9999, warmup_steps=500, weight_decay=1e-6, train_timesteps=1000,
        sample_steps=50,
    ),
}


def load_profile(name: str, **overrides: Any) -> LDMConfig:
    """Return the named profile with ``overrides`` applied; :class:`ConfigError` on bad values."""
    if name not in PROFILES:
        raise ConfigError(f"unknown LDM profile {name!r}; expected one of {', '.join(PROFILES)}")
    return validate(LDMConfig, {**PROFILES[name], "profile": name, **overrides}, f"profile {name!r}")
