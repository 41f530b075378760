"""A trained site generator: load ``model.pt`` and draw synthetic slices.

Pixel generators (:class:`PixelDiffusionGenerator`) run EDM's probability-flow
ODE on the pixels (Euler = DDIM, or DPM-Solver++) from ``sigma_max`` down to
0 and clip to [0, 1]; latent generators (:class:`LatentDiffusionGenerator`)
run the reverse process in latent space with a fast deterministic solver
(DDIM or DPM-Solver++, at most ``sample_steps`` steps by default; DDPM with
all training steps is there for comparison), then decode with the
autoencoder. The initial noise of every image comes from a
``torch.Generator`` seeded by ``seed``, so the same call gives the same images.

>>> gen = load_generator(Path("work/gen"))
>>> x = gen.sample(16, seed=1)          # (16, H, W) float32 in [0, 1]
>>> gen.checkpoint_hash                 # 'sha256:...' for the privacy certificate
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedsynth.devices import resolve_device
from fedsynth.digests import file_sha256
from fedsynth.errors import CheckpointError, ConfigError
from fedsynth.generative.checkpoint import MODEL_FILE, load_checkpoint
from fedsynth.generative.config import LDMConfig
from fedsynth.generative.networks import (
    build_autoencoder,
    build_sampler,
    build_unet,
    encoder_features,
)
from fedsynth.generative.texture import texture_noise
from fedsynth.progress import progress

__all__ = ["Generator", "LatentDiffusionGenerator", "PixelDiffusionGenerator", "load_generator"]

log = logging.getLogger(__name__)


@dataclass
class LatentDiffusionGenerator:
    """Autoencoder + EMA diffusion UNet + per-channel latent standardisation, ready to sample.

    The UNet works on ``(mu - shift) * scale`` (per latent channel); sampling
    undoes it, ``mu = z / scale + shift``, before decoding.
    """

    config: LDMConfig
    autoencoder: torch.nn.Module
    unet: torch.nn.Module
    scale: tuple[float, ...]
    shift: tuple[float, ...]
    checkpoint_hash: str
    path: Path
    texture_spectrum: np.ndarray | None = None  # (H, W//2+1); None for a model.pt from before texture restoration
    training: dict[str, Any] = field(default_factory=dict)  # the training summary stored with the model

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @torch.no_grad()
    def sample(self, n: int, steps: int | None = None, seed: int = 0, sampler: str | None = None,
               batch_size: int = 64, progress_bar: bool = False, texture: bool | None = None,
               with_untextured: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """(n, S, S) float32 in [0, 1]; deterministic for a given (n, steps, seed, sampler, batch_size).

        ``sampler``: ``ddim``, ``dpm`` or ``ddpm``; None: the config's.
        ``texture`` (default: the config's ``restore_texture``) adds the site's
        fitted in-body noise texture to the decoded images (``texture.py``).
        ``with_untextured`` also returns the same samples without texture,
        ``(textured, untextured)``: the privacy gate's companions
        (``GateConfig.require_companions``).
        """
        if n < 0:
            raise ConfigError(f"number of samples must be >= 0, got {n}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        cfg = self.config
        sampler = sampler or cfg.sampler
        steps = cfg.sample_steps if steps is None else int(steps)
        build_sampler(cfg, sampler, steps)  # validate before any work
        s = cfg.latent_size
        out = np.empty((n, cfg.image_size, cfg.image_size), np.float32)
        plain = np.empty_like(out) if with_untextured else None
        gen = torch.Generator().manual_seed(int(seed))
        noise = torch.randn(n, cfg.latent_channels, s, s, generator=gen)
        texture = cfg.restore_texture if texture is None else texture
        tex_gen = torch.Generator().manual_seed(int(seed) + 1_000_003) if texture else None
        dev = next(self.unet.parameters()).device
        scale, shift = (torch.tensor(v, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
                        for v in (self.scale, self.shift))
        for i in progress(range(0, n, batch_size), enabled=progress_bar, desc="sampling", unit="batch"):
            sched = build_sampler(cfg, sampler, steps)
            z = noise[i:i + batch_size].to(dev) * sched.init_noise_sigma
            for t in sched.timesteps:
                zin = sched.scale_model_input(z, t)
                tt = torch.full((len(z),), int(t), device=dev, dtype=torch.long)
                eps = self.unet(zin, timesteps=tt)
                kw = {"generator": gen} if sampler == "ddpm" else {}
                z = sched.step(eps, t, z, **kw).prev_sample
            img = self.autoencoder.decode(z / scale + shift).float().clamp_(0.0, 1.0)
            if plain is not None:
                plain[i:i + len(z)] = img[:, 0].cpu().numpy()
            if tex_gen is not None and self.texture_spectrum is not None:
                img = (img + texture_noise(self.texture_spectrum, img, tex_gen)).clamp_(0.0, 1.0)
            out[i:i + len(z)] = img[:, 0].cpu().numpy()
        if not np.isfinite(out).all():
            raise FloatingPointError("generator produced non-finite samples")
        return (out, plain) if plain is not None else out

    @torch.no_grad()
    def represent(self, images: np.ndarray, seed: int = 0, batch_size: int = 64,
                  texture: bool | None = None) -> np.ndarray:
        """What the generator can express of real slices: decode(encode(x)), plus its texture model when on
        (``texture``: None follows the config's ``restore_texture``; False gives the bare reconstruction).

        The representation ceiling of the diagnostics (``fedsynth site-fidelity``):
        a task network trained on these instead of the real slices shows what
        the representation alone costs, before any diffusion prior or gate.
        """
        from fedsynth.generative.train import prepare_images

        x = prepare_images(images, self.image_size)
        dev = next(self.autoencoder.parameters()).device
        tex_gen = torch.Generator().manual_seed(int(seed) + 1_000_003)
        out = []
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].to(dev)
            rec = self.autoencoder.decode(self.autoencoder.encode(xb)[0]).float().clamp_(0.0, 1.0)
            use = self.config.restore_texture if texture is None else texture
            if use and self.texture_spectrum is not None:
                rec = (rec + texture_noise(self.texture_spectrum, rec, tex_gen)).clamp_(0.0, 1.0)
            out.append(rec[:, 0].cpu())
        return torch.cat(out).numpy()

    @property
    def exact_representation(self) -> bool:
        """False: the autoencoder loses detail (see :meth:`represent`)."""
        return False

    @torch.no_grad()
    def features(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(N, S, S) in [0, 1] -> (N, F) encoder features (for the Fréchet distance)."""
        from fedsynth.generative.train import prepare_images

        x = prepare_images(images, self.image_size)
        dev = next(self.autoencoder.parameters()).device
        feats = [encoder_features(self.autoencoder, x[i:i + batch_size].to(dev)).float().cpu()
                 for i in range(0, len(x), batch_size)]
        return torch.cat(feats).numpy().astype(np.float64)


@dataclass
class PixelDiffusionGenerator:
    """EMA diffusion UNet on the pixels (EDM), ready to sample; the representation is the image itself."""

    config: LDMConfig
    unet: torch.nn.Module
    checkpoint_hash: str
    path: Path
    training: dict[str, Any] = field(default_factory=dict)  # the training summary stored with the model

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def exact_representation(self) -> bool:
        """True: the diffusion model works on the pixels, nothing is encoded away."""
        return True

    def represent(self, images: np.ndarray, seed: int = 0, batch_size: int = 64,
                  texture: bool | None = None) -> np.ndarray:
        """The slices themselves (resized to the model's size): the representation is exact."""
        from fedsynth.generative.train import prepare_images

        return prepare_images(images, self.image_size)[:, 0].numpy()

    @torch.no_grad()
    def sample(self, n: int, steps: int | None = None, seed: int = 0, sampler: str | None = None,
               batch_size: int = 64, progress_bar: bool = False, texture: bool | None = None,
               with_untextured: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """(n, S, S) float32 in [0, 1]; deterministic for a given (n, steps, seed, sampler, batch_size).

        ``sampler``: ``dpm`` (DPM-Solver++ 2M) or ``ddim`` (Euler); None: the
        config's. ``with_untextured`` also returns each sample's companion
        ``(samples, companions)``: its denoised estimate D(x; sigma) at the
        last step whose noise level is at least ``companion_sigma`` — the same
        anatomy without the fine noise the generator draws after it (the gate's
        companions, ``GateConfig.require_companions``). ``texture`` exists for
        the latent generator's texture model; here only ``None``/``False`` are
        accepted, since the pixel model draws the scanner's noise itself.
        """
        from fedsynth.generative.edm import EDM, build_edm_sampler, from_model

        if n < 0:
            raise ConfigError(f"number of samples must be >= 0, got {n}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if texture:
            raise ConfigError("the pixel generator has no separate texture model (it draws the noise itself)")
        cfg = self.config
        sampler = sampler or cfg.sampler
        steps = cfg.sample_steps if steps is None else int(steps)
        build_edm_sampler(cfg, sampler, steps)  # validate before any work
        edm = EDM(cfg)
        s = cfg.image_size
        out = np.empty((n, s, s), np.float32)
        plain = np.empty_like(out) if with_untextured else None
        gen = torch.Generator().manual_seed(int(seed))
        noise = torch.randn(n, 1, s, s, generator=gen)
        dev = next(self.unet.parameters()).device
        for i in progress(range(0, n, batch_size), enabled=progress_bar, desc="sampling", unit="batch"):
            sched = build_edm_sampler(cfg, sampler, steps)
            x = noise[i:i + batch_size].to(dev) * sched.init_noise_sigma
            companion = None
            for k, t in enumerate(sched.timesteps):
                sigma = sched.sigmas[k].to(dev).repeat(len(x))
                raw = edm.raw(self.unet, sched.scale_model_input(x, t), sigma).float()
                if plain is not None and float(sched.sigmas[k]) >= cfg.companion_sigma:
                    companion = edm.denoised(x, raw, sigma)  # kept from the last step at or above the level
                x = sched.step(raw, t, x).prev_sample
            if plain is not None:
                plain[i:i + len(x)] = from_model(x if companion is None else companion)[:, 0].cpu().numpy()
            out[i:i + len(x)] = from_model(x)[:, 0].cpu().numpy()
        if not np.isfinite(out).all():
            raise FloatingPointError("generator produced non-finite samples")
        return (out, plain) if plain is not None else out


#: Either kind of trained site generator (what :func:`load_generator` returns).
Generator = LatentDiffusionGenerator | PixelDiffusionGenerator


def load_generator(workdir: Path, device: str = "auto") -> Generator:
    """Load the finished generator in ``workdir`` onto ``device`` (``auto``, ``cpu`` or ``cuda``).

    Raises :class:`CheckpointError` if it is absent, unfinished or corrupt.
    """
    path = Path(workdir) / MODEL_FILE
    if not path.is_file():
        raise CheckpointError(f"{workdir}: no trained generator ({MODEL_FILE} missing; train or resume first)")
    digest = file_sha256(path)
    ck = load_checkpoint(path, "model")
    try:
        cfg = LDMConfig.model_validate_json(ck["config"])
        training = json.loads(ck["summary"]) if isinstance(ck.get("summary"), str) else {}
        unet = build_unet(cfg)
        unet.load_state_dict(ck["unet"])
        if cfg.kind == "pixel":
            return PixelDiffusionGenerator(cfg, unet.to(resolve_device(device)).eval(), digest, path, training)
        ae = build_autoencoder(cfg)
        ae.load_state_dict(ck["ae"])
        scale, shift = ck["scale"], ck.get("shift")
        if isinstance(scale, (int, float)):  # checkpoints before per-channel standardisation: one global scale
            scale = [float(scale)] * cfg.latent_channels
        scale = tuple(float(v) for v in scale)
        shift = (0.0,) * len(scale) if shift is None else tuple(float(v) for v in shift)
        if len(scale) != cfg.latent_channels or len(shift) != cfg.latent_channels:
            raise ValueError(f"latent scale/shift need {cfg.latent_channels} channels")
        spectrum = ck.get("texture_spectrum")
        if spectrum is not None:
            spectrum = np.asarray(spectrum, np.float64)
            if spectrum.shape != (cfg.image_size, cfg.image_size // 2 + 1) or not np.isfinite(spectrum).all():
                raise ValueError(f"texture spectrum of shape {spectrum.shape} does not fit {cfg.image_size} px")
    except Exception as err:  # noqa: BLE001 - any mismatch is an incompatible checkpoint
        msg = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: incompatible generator checkpoint ({msg})") from None
    dev = resolve_device(device)
    return LatentDiffusionGenerator(cfg, ae.to(dev).eval(), unet.to(dev).eval(), scale, shift, digest, path,
                                    spectrum, training)
