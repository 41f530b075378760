"""Train a site's generator: diffusion on pixels (EDM), or an autoencoder then diffusion on its latents.

Two kinds (``LDMConfig.kind``):

``pixel`` (the default at 64 px)
    an EDM diffusion UNet (:mod:`fedsynth.generative.edm`) trained on the
    slices themselves, mapped to [-1, 1] and pixel-unshuffled. No
    autoencoder, so nothing the task needs is lost before the diffusion
    model sees it, and the scanner's noise is part of what it learns.
``latent`` (kept for 256 px and up)
    the autoencoder compresses each slice by ``2**(levels-1)`` per edge, so
    the diffusion UNet (the expensive, many-step part) works on a small
    latent grid. The autoencoder is frozen after phase one; its latents
    (posterior means) are computed once and cached in memory, and
    standardised per channel (shift = channel mean, scale = 1/channel std)
    before the diffusion model sees them. Why per channel and centred: a KL
    autoencoder with a tiny KL weight gives channels with different offsets
    and spreads (on the bundled CT cohort channel means of -3.6..-0.4 at
    stds of 1.4..2.8); one global ``1/std`` of a first batch, as the MONAI
    tutorials do, leaves a non-zero mean and unequal variances that the noise
    prior N(0, I) does not match. Shift and scale are stored with the model
    and undone before decoding. The autoencoder may train on random crops
    (``ae_patch_size``, cheap) and finish with the last ``ae_full_fraction``
    of its epochs on whole images: GroupNorm statistics of a crop differ
    from those of a whole slice.

How long the diffusion model trains is a validation criterion, not an epoch
count (``val_every``, ``val_patience``; ``unet_epochs`` is only the maximum):
every ``val_every`` epochs the EMA weights' diffusion loss is measured on the
validation patients' slices at fixed noise levels with fixed noise (so the
number is comparable between checks), the best EMA weights are kept, and
training stops after ``val_patience`` checks without a lower loss. The same
loss on as many training slices is recorded beside it: a growing gap is the
model memorising its training patients. With 80-120 training slices a pixel
model starts memorising after ~1,000 steps (the held-out loss turns while
the training loss keeps falling), which is why the stop is on held-out data.

Robustness: after every epoch the whole training state (networks, optimizers,
EMA, best EMA and the stopping state, LR schedulers, RNG states,
stage/epoch/step, history) is written atomically to ``train_state.pt``.
``resume=True`` reloads it and continues exactly where it stopped; all
randomness comes from one seeded ``torch.Generator`` whose state is saved, so
on CPU an interrupted and resumed run matches an uninterrupted one. When
training ends ``model.pt`` (what sampling needs) is written; a finished run
resumed is a no-op.

>>> cfg = load_profile("tiny")
>>> summary = train_ldm(images, Path("work/gen"), cfg, validation=val_images)  # (N, H, W) float32 in [0, 1]
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fedsynth.devices import resolve_device
from fedsynth.digests import array_digest
from fedsynth.errors import CheckpointError, DataError
from fedsynth.generative.checkpoint import MODEL_FILE, STATE_FILE, load_checkpoint, save_checkpoint
from fedsynth.generative.config import LDMConfig
from fedsynth.generative.edm import AUGMENTATIONS, EDM, dihedral, to_model
from fedsynth.generative.networks import (
    build_autoencoder,
    build_discriminator,
    build_noise_scheduler,
    build_unet,
)
from fedsynth.io_utils import write_json_atomic
from fedsynth.progress import progress as progress_bar
from fedsynth.stopping import EarlyStopping

__all__ = ["SUMMARY_FILE", "prepare_images", "train_ldm"]

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"


def prepare_images(images: np.ndarray, size: int) -> torch.Tensor:
    """(N, H, W) float in [0, 1] -> (N, 1, size, size) float32 tensor; :class:`DataError` if unusable."""
    arr = np.asarray(images)
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 8 or arr.shape[2] < 8:
        raise DataError(f"training images must be an (N, H, W) stack, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise DataError(f"training images must be floating point in [0, 1], got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise DataError("training images contain NaN or infinite values")
    if arr.min() < -1e-3 or arr.max() > 1 + 1e-3:
        raise DataError(f"training images must lie in [0, 1], got [{arr.min():.3g}, {arr.max():.3g}]")
    x = torch.from_numpy(np.clip(arr, 0.0, 1.0)).unsqueeze(1)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp_(0.0, 1.0).contiguous()


def _lr_lambda(total: int, warmup: int, min_ratio: float):
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        p = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p))

    return f


class _Run:
    """All mutable training state; ``state_dict``/``load_state_dict`` round-trip it."""

    def __init__(self, cfg: LDMConfig, x: torch.Tensor, device: torch.device, val: torch.Tensor | None) -> None:
        self.cfg, self.x, self.device, self.val = cfg, x, device, val
        self.n = len(x)
        self.pixel = cfg.kind == "pixel"
        torch.manual_seed(cfg.seed)
        self.ae = None if self.pixel else build_autoencoder(cfg).to(device)
        self.unet = build_unet(cfg).to(device)
        self.ema = copy.deepcopy(self.unet).requires_grad_(False)
        self.disc = build_discriminator(cfg).to(device) if cfg.adv_weight > 0 and not self.pixel else None
        self.noise = None if self.pixel else build_noise_scheduler(cfg)
        self.edm = EDM(cfg) if self.pixel else None
        self.gen = torch.Generator().manual_seed(cfg.seed)
        un_steps = cfg.unet_epochs * self.batches(cfg.unet_batch_size)
        if self.ae is not None:
            ae_steps = cfg.ae_epochs * self.batches(cfg.ae_batch_size)
            self.ae_opt = torch.optim.AdamW(self.ae.parameters(), lr=cfg.ae_lr, weight_decay=cfg.weight_decay)
            self.ae_sched = torch.optim.lr_scheduler.LambdaLR(
                self.ae_opt, _lr_lambda(ae_steps, cfg.warmup_steps, cfg.lr_min_ratio))
        self.un_opt = torch.optim.AdamW(self.unet.parameters(), lr=cfg.unet_lr, weight_decay=cfg.weight_decay)
        self.un_sched = torch.optim.lr_scheduler.LambdaLR(
            self.un_opt, _lr_lambda(un_steps, cfg.warmup_steps, cfg.lr_min_ratio))
        self.d_opt = (torch.optim.AdamW(self.disc.parameters(), lr=cfg.ae_lr, weight_decay=cfg.weight_decay)
                      if self.disc is not None else None)
        self.stage, self.epoch, self.step, self.ema_updates = ("unet" if self.pixel else "ae"), 0, 0, 0
        self.scale: list[float] | None = None  # per latent channel: z = (mu - shift) * scale
        self.shift: list[float] | None = None
        self.history: dict[str, list[dict[str, float]]] = {"ae": [], "unet": [], "validation": []}
        self.seconds = 0.0
        self.seen = {"ae": 0, "unet": 0}  # images (crops) through each network's training
        self.latents: torch.Tensor | None = None  # what the UNet learns: standardised latents, or pixels in [-1, 1]
        self.val_latents: torch.Tensor | None = None
        self.stopper = EarlyStopping(cfg.val_patience)  # on the held-out diffusion loss
        self.best_weights: dict[str, torch.Tensor] | None = None  # the EMA UNet at the best check
        self.best_epoch = 0
        amp = cfg.amp and device.type == "cuda"
        self.autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else contextlib.nullcontext
        self.unet_fwd = torch.compile(self.unet) if (cfg.compile and device.type == "cuda") else self.unet

    def batches(self, bs: int) -> int:
        return max(1, math.ceil(self.n / bs))

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        opt = lambda m: None if m is None else m.state_dict()  # noqa: E731
        return {
            "config": self.cfg.model_dump_json(), "stage": self.stage, "epoch": self.epoch,
            "step": self.step, "ema_updates": self.ema_updates, "scale": self.scale, "shift": self.shift,
            "history": json.dumps(self.history), "seconds": self.seconds, "seen": json.dumps(self.seen),
            "stopper": json.dumps(self.stopper.state_dict()), "best_weights": self.best_weights,
            "best_epoch": self.best_epoch,
            "ae": opt(self.ae), "unet": self.unet.state_dict(), "ema": self.ema.state_dict(),
            "disc": opt(self.disc), "ae_opt": None if self.ae is None else self.ae_opt.state_dict(),
            "ae_sched": None if self.ae is None else self.ae_sched.state_dict(),
            "un_opt": self.un_opt.state_dict(), "un_sched": self.un_sched.state_dict(), "d_opt": opt(self.d_opt),
            "rng_generator": self.gen.get_state(), "rng_torch": torch.get_rng_state(),
        }

    def load_state_dict(self, s: dict[str, Any]) -> None:
        if self.ae is not None:
            self.ae.load_state_dict(s["ae"])
            self.ae_opt.load_state_dict(s["ae_opt"])
            self.ae_sched.load_state_dict(s["ae_sched"])
        self.unet.load_state_dict(s["unet"])
        self.ema.load_state_dict(s["ema"])
        if self.disc is not None:
            self.disc.load_state_dict(s["disc"])
            self.d_opt.load_state_dict(s["d_opt"])
        self.un_opt.load_state_dict(s["un_opt"])
        self.un_sched.load_state_dict(s["un_sched"])
        self.gen.set_state(s["rng_generator"])
        torch.set_rng_state(s["rng_torch"])
        self.stage, self.epoch, self.step = str(s["stage"]), int(s["epoch"]), int(s["step"])
        self.ema_updates = int(s["ema_updates"])
        self.scale = None if s["scale"] is None else [float(v) for v in s["scale"]]
        self.shift = None if s["shift"] is None else [float(v) for v in s["shift"]]
        self.history = {"validation": [], **json.loads(s["history"])}
        self.seconds = float(s["seconds"])
        self.seen = json.loads(s.get("seen", '{"ae": 0, "unet": 0}'))
        if "stopper" in s:  # states written before the validation rule have none
            self.stopper.load_state_dict(json.loads(s["stopper"]))
            self.best_weights, self.best_epoch = s["best_weights"], int(s["best_epoch"])

    # ------------------------------------------------------------ steps
    def _batch_ids(self, bs: int) -> list[torch.Tensor]:
        perm = torch.randperm(self.n, generator=self.gen)
        return [perm[i:i + bs] for i in range(0, self.n, bs)]

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        p = self.cfg.ae_patch_size
        full = round(self.cfg.ae_full_fraction * self.cfg.ae_epochs)
        if p is None or p >= x.shape[-1] or self.epoch >= self.cfg.ae_epochs - full:
            return x
        out = torch.empty(x.shape[0], 1, p, p)
        hi = x.shape[-1] - p + 1
        for i in range(x.shape[0]):
            r, c = torch.randint(0, hi, (2,), generator=self.gen).tolist()
            out[i] = x[i, :, r:r + p, c:c + p]
        return out

    def ae_epoch(self) -> dict[str, float]:
        cfg, tot, totkl, count = self.cfg, 0.0, 0.0, 0
        assert self.ae is not None
        adv_on = self.disc is not None and self.epoch >= cfg.adv_start_epoch
        self.ae.train()
        for ids in self._batch_ids(cfg.ae_batch_size):
            xb = self._crop(self.x[ids])
            eps = torch.randn(xb.shape[0], cfg.latent_channels, xb.shape[-2] // self.down,
                              xb.shape[-1] // self.down, generator=self.gen)
            xb, eps = xb.to(self.device), eps.to(self.device)
            with self.autocast():
                mu, sigma = self.ae.encode(xb)
                rec = self.ae.decode(mu + sigma * eps)
                l1 = F.l1_loss(rec.float(), xb)
                kl = 0.5 * (mu.float().pow(2) + sigma.float().pow(2)
                            - torch.log(sigma.float().pow(2) + 1e-12) - 1).sum(dim=(1, 2, 3)).mean()
                loss = l1 + cfg.kl_weight * kl
                if adv_on:
                    logits = self.disc(rec.contiguous().float())[-1]
                    loss = loss + cfg.adv_weight * F.mse_loss(logits, torch.ones_like(logits))
            self.ae_opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.ae.parameters(), cfg.grad_clip)
            self.ae_opt.step()
            self.ae_sched.step()
            if adv_on:
                fake = self.disc(rec.detach().contiguous().float())[-1]
                real = self.disc(xb.contiguous())[-1]
                d_loss = 0.5 * (F.mse_loss(fake, torch.zeros_like(fake)) + F.mse_loss(real, torch.ones_like(real)))
                self.d_opt.zero_grad(set_to_none=True)
                d_loss.backward()
                self.d_opt.step()
            tot += l1.item() * len(ids)
            totkl += kl.item() * len(ids)
            count += len(ids)
            self.seen["ae"] += len(ids)
            self._after_step(loss.item())
        return {"l1": tot / count, "kl": totkl / count}

    @property
    def down(self) -> int:
        return 2 ** (len(self.cfg.ae_channels) - 1)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior means of ``x`` (the frozen autoencoder is deterministic)."""
        assert self.ae is not None
        self.ae.eval()
        bs = max(self.cfg.unet_batch_size, 1)
        mus = [self.ae.encode(x[i:i + bs].to(self.device))[0].float().cpu() for i in range(0, len(x), bs)]
        return torch.cat(mus)

    @torch.no_grad()
    def texture_spectrum(self) -> list[list[float]]:
        """Power spectrum of what the frozen autoencoder leaves out of the training slices (see texture.py)."""
        from fedsynth.generative.texture import fit_texture_spectrum

        assert self.latents is not None and self.scale is not None and self.shift is not None
        assert self.ae is not None
        self.ae.eval()
        bs = max(self.cfg.unet_batch_size, 1)
        shift, scale = (torch.tensor(v).view(1, -1, 1, 1) for v in (self.shift, self.scale))
        mus = self.latents / scale + shift  # the cached posterior means: no second encoding pass
        recon = torch.cat([self.ae.decode(mus[i:i + bs].to(self.device)).float().cpu() for i in range(0, self.n, bs)])
        return fit_texture_spectrum(self.x, recon).tolist()

    def prepare_diffusion_data(self) -> None:
        """What the UNet learns, cached: pixels in [-1, 1], or (latent) standardised posterior means.

        The latent shift and scale are fitted once, on the training latents,
        and applied to the validation latents too.
        """
        if self.pixel:
            self.latents = to_model(self.x)
            self.val_latents = None if self.val is None else to_model(self.val)
            return
        mus = self.encode(self.x)
        if self.scale is None or self.shift is None:
            self.shift = mus.mean(dim=(0, 2, 3)).tolist()
            self.scale = (1.0 / mus.std(dim=(0, 2, 3)).clamp_min(1e-6)).tolist()
        shift, scale = (torch.tensor(v).view(1, -1, 1, 1) for v in (self.shift, self.scale))
        self.latents = (mus - shift) * scale
        self.val_latents = None if self.val is None else (self.encode(self.val) - shift) * scale

    def _diffusion_loss(self, net: torch.nn.Module, z0: torch.Tensor, noise: torch.Tensor, level: torch.Tensor,
                        labels: torch.Tensor | None = None) -> torch.Tensor:
        """Per-item training loss at noise ``level`` (EDM sigmas, or DDPM timesteps), (B,)."""
        z0, noise, level = z0.to(self.device), noise.to(self.device), level.to(self.device)
        if self.edm is not None:
            with self.autocast():
                return self.edm.loss(net, z0, level, noise, None if labels is None else labels.to(self.device))
        zt = self.noise.add_noise(z0, noise, level)
        target = noise if self.cfg.prediction_type == "epsilon" else self.noise.get_velocity(z0, noise, level)
        with self.autocast():
            pred = net(zt, timesteps=level)
        return ((pred.float() - target) ** 2).mean(dim=(1, 2, 3))

    def unet_epoch(self) -> dict[str, float]:
        cfg, tot, count = self.cfg, 0.0, 0
        assert self.latents is not None
        self.unet.train()
        for ids in self._batch_ids(cfg.unet_batch_size):
            z0 = self.latents[ids]
            labels = None
            if self.edm is not None and cfg.augment_p > 0:
                labels = (torch.randint(1, AUGMENTATIONS, (len(ids),), generator=self.gen)
                          * (torch.rand(len(ids), generator=self.gen) < cfg.augment_p))
                z0 = torch.stack([dihedral(z, int(k)) for z, k in zip(z0, labels, strict=True)])
            noise = torch.randn(z0.shape, generator=self.gen)
            if self.edm is not None:
                level = self.edm.draw_sigmas(len(ids), self.gen)
            else:
                level = torch.randint(0, cfg.train_timesteps, (len(ids),), generator=self.gen)
            loss = self._diffusion_loss(self.unet_fwd, z0, noise, level, labels).mean()
            self.un_opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.unet.parameters(), cfg.grad_clip)
            self.un_opt.step()
            self.un_sched.step()
            self._ema_update()
            tot += loss.item() * len(ids)
            count += len(ids)
            self.seen["unet"] += len(ids)
            self._after_step(loss.item())
        return {"mse": tot / count}

    @torch.no_grad()
    def heldout_loss(self, data: torch.Tensor, levels: int = 8) -> float:
        """The EMA UNet's mean diffusion loss on ``data`` at ``levels`` fixed noise levels with fixed noise.

        Noise levels: quantiles of the training distribution (EDM's lognormal
        sigmas, or evenly spaced DDPM timesteps); the noise is drawn from a
        generator seeded by the config's seed, so every check sees the same
        corruptions and only the weights change between checks.
        """
        self.ema.eval()
        g = torch.Generator().manual_seed(self.cfg.seed + 7919)
        if self.edm is not None:
            grid = self.edm.heldout_sigmas(levels)
        else:
            grid = ((torch.arange(levels) + 0.5) * self.cfg.train_timesteps / levels).long()
        bs, total = max(self.cfg.sample_batch_size, 1), 0.0
        for lv in grid:
            noise = torch.randn(data.shape, generator=g)
            for i in range(0, len(data), bs):
                z, e = data[i:i + bs], noise[i:i + bs]
                total += float(self._diffusion_loss(self.ema, z, e, lv.repeat(len(z))).sum())
        return total / (levels * len(data))

    def validate(self) -> bool:
        """One validation check; True when training should stop (patience exhausted)."""
        assert self.val_latents is not None and self.latents is not None
        t0 = time.perf_counter()
        val = self.heldout_loss(self.val_latents)
        # as many training items, evenly spaced: the memorisation gap beside the held-out loss
        idx = torch.linspace(0, self.n - 1, min(self.n, len(self.val_latents))).round().long()
        train = self.heldout_loss(self.latents[idx])
        improved = self.stopper.update(val)
        if improved:
            self.best_weights, self.best_epoch = copy.deepcopy(self.ema.state_dict()), self.epoch
        self.history["validation"].append({"epoch": self.epoch, "step": self.step, "val_loss": val,
                                           "train_loss": train, "best": improved,
                                           "seconds": round(time.perf_counter() - t0, 3)})
        log.debug("validation at epoch %d: held-out loss %.4f (training %.4f)%s", self.epoch, val, train,
                  " best" if improved else "")
        return self.stopper.stop

    @torch.no_grad()
    def _ema_update(self) -> None:
        self.ema_updates += 1
        d = min(self.cfg.ema_decay, (1 + self.ema_updates) / (10 + self.ema_updates))
        for pe, p in zip(self.ema.parameters(), self.unet.parameters(), strict=True):
            pe.lerp_(p.detach(), 1 - d)
        for be, b in zip(self.ema.buffers(), self.unet.buffers(), strict=True):
            be.copy_(b)

    def _after_step(self, loss: float) -> None:
        self.step += 1
        if not math.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss at step {self.step}")
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    bar: Any = None


def _check_compatible(state: dict[str, Any], cfg: LDMConfig, fp: str, path: Path) -> None:
    saved = LDMConfig.model_validate_json(state["config"])
    if saved != cfg:
        diff = [k for k in cfg.model_fields if getattr(saved, k) != getattr(cfg, k)]
        raise CheckpointError(f"{path}: trained with a different config ({', '.join(diff[:4])} differ); "
                              "use the same profile/overrides or a new workdir")
    if state.get("data_fingerprint") != fp:
        raise CheckpointError(f"{path}: trained on different images; use a new workdir")


def _summary(run: _Run, workdir: Path, resumed: bool, stopped: str) -> dict[str, Any]:
    val = run.history["validation"]
    ae_steps = 0 if run.ae is None else run.cfg.ae_epochs * run.batches(run.cfg.ae_batch_size)
    return {
        "kind": run.cfg.kind, "profile": run.cfg.profile, "image_size": run.cfg.image_size, "n_images": run.n,
        "n_validation": 0 if run.val is None else len(run.val),
        "steps": run.step, "stage": run.stage, "latent_scale": run.scale, "latent_shift": run.shift,
        "resumed": resumed,
        "train_seconds": round(run.seconds, 2), "history": run.history,
        "final_ae_l1": run.history["ae"][-1]["l1"] if run.history["ae"] else None,
        "final_unet_mse": run.history["unet"][-1]["mse"] if run.history["unet"] else None,
        # the effort, for the diagnostics: optimiser steps and images seen per network
        "optimizer_steps": {"autoencoder": ae_steps, "diffusion": run.step - ae_steps},
        "samples_seen": dict(run.seen),
        "unet_epochs": run.epoch,
        "stopped": stopped,
        "best_epoch": run.best_epoch if val else run.epoch,
        "best_val_loss": run.stopper.best if val else None,
        "model": str(workdir / MODEL_FILE),
    }


def _fingerprint(x: torch.Tensor, val: torch.Tensor | None) -> str:
    """What a resume must match: the training images, and the validation images when there are any."""
    fp = "sha256:" + array_digest(x.numpy())
    return fp if val is None else fp + "+val:" + array_digest(val.numpy())


def train_ldm(
    images: np.ndarray,
    workdir: Path,
    cfg: LDMConfig,
    resume: bool = False,
    progress: bool = True,
    validation: np.ndarray | None = None,
) -> dict[str, Any]:
    """Train the generator on ``images``; return the training summary.

    ``validation``: slices of the site's validation patients (never its test
    patients), for the held-out stopping rule (``cfg.val_every``); without
    them, or with ``val_every = 0``, the UNet trains for ``unet_epochs``.
    ``workdir`` receives ``train_state.pt`` (after every epoch), ``model.pt``
    and ``summary.json`` (at the end). ``resume=True`` continues from
    ``train_state.pt`` (or returns at once if ``model.pt`` of the same
    config and data exists); ``resume=False`` starts from scratch.
    Raises :class:`DataError` for unusable images and :class:`CheckpointError`
    for a corrupt or incompatible checkpoint.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    x = prepare_images(images, cfg.image_size)
    val = None
    if cfg.val_every > 0:
        if validation is None or len(validation) == 0:
            log.warning("no validation slices: the diffusion model trains for its maximum, %d epochs",
                        cfg.unet_epochs)
        else:
            val = prepare_images(validation, cfg.image_size)
    fp = _fingerprint(x, val)  # a resume on other images is refused
    model_path, state_path = workdir / MODEL_FILE, workdir / STATE_FILE
    device = resolve_device(cfg.device)
    if resume and model_path.exists():
        model = load_checkpoint(model_path, "model")
        _check_compatible(model, cfg, fp, model_path)
        log.info("%s: training already finished; nothing to do", model_path)
        summary = json.loads(model["summary"])
        summary["resumed"] = True
        return summary
    run = _Run(cfg, x, device, val)
    resumed = False
    if resume and state_path.exists():
        state = load_checkpoint(state_path, "train_state")
        _check_compatible(state, cfg, fp, state_path)
        try:
            run.load_state_dict(state)
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as err:
            raise CheckpointError(f"{state_path}: incompatible training state ({str(err).splitlines()[0][:100]})") \
                from None
        resumed = True
        log.info("resuming from %s: stage %s, epoch %d, step %d", state_path, run.stage, run.epoch, run.step)
    elif not resume:
        model_path.unlink(missing_ok=True)

    def checkpoint() -> None:
        save_checkpoint(state_path, "train_state", {**run.state_dict(), "data_fingerprint": fp})

    ae_total = 0 if run.ae is None else cfg.ae_epochs * run.batches(cfg.ae_batch_size)
    un_total = cfg.unet_epochs * run.batches(cfg.unet_batch_size)
    if run.stage == "ae":
        run.bar = progress_bar(total=ae_total, initial=run.step, enabled=progress, desc="autoencoder", unit="step")
        while run.stage == "ae":
            t0 = time.perf_counter()
            stats = run.ae_epoch()
            run.epoch += 1
            run.seconds += time.perf_counter() - t0
            run.history["ae"].append({"epoch": run.epoch, "step": run.step, **stats,
                                      "seconds": round(time.perf_counter() - t0, 3)})
            log.debug("AE epoch %d: %s", run.epoch, stats)
            if run.epoch >= cfg.ae_epochs:
                run.stage, run.epoch = "unet", 0
                checkpoint()
            elif run.epoch % cfg.checkpoint_every == 0:
                checkpoint()
        run.bar.close()
    if run.epoch == 0 and run.stage == "unet" and run.ae is not None:
        log.info("autoencoder done (L1 %.4f); encoding %d latents",
                 run.history["ae"][-1]["l1"] if run.history["ae"] else float("nan"), run.n)
    run.prepare_diffusion_data()
    validating = val is not None
    stopped = "max_epochs"
    done = run.step - ae_total
    run.bar = progress_bar(total=un_total, initial=max(0, done), enabled=progress, desc="diffusion", unit="step")
    while run.stage == "unet" and run.epoch < cfg.unet_epochs:
        t0 = time.perf_counter()
        stats = run.unet_epoch()
        run.epoch += 1
        stop = False
        if validating and (run.epoch % cfg.val_every == 0 or run.epoch == cfg.unet_epochs):
            stop = run.validate()
        run.seconds += time.perf_counter() - t0
        run.history["unet"].append({"epoch": run.epoch, "step": run.step, **stats,
                                    "seconds": round(time.perf_counter() - t0, 3)})
        if stop:
            run.stage = "stopped"
        if stop or run.epoch % cfg.checkpoint_every == 0 or run.epoch == cfg.unet_epochs:
            checkpoint()
    run.bar.close()
    if run.stage == "stopped" or (validating and run.stopper.stop):
        stopped = "validation"
    if validating and run.best_weights is not None:
        run.ema.load_state_dict(run.best_weights)  # the best held-out loss, not the last epoch
        log.info("diffusion: best held-out loss %.4f at epoch %d of %d (%s)", run.stopper.best,
                 run.best_epoch, run.epoch, "stopped by validation" if stopped == "validation" else "maximum")
    run.stage = "done"
    summary = _summary(run, workdir, resumed, stopped)
    payload: dict[str, Any] = {"config": cfg.model_dump_json(), "data_fingerprint": fp,
                               "unet": run.ema.state_dict(), "summary": json.dumps(summary)}
    if run.ae is not None:
        payload.update(scale=run.scale, shift=run.shift, ae=run.ae.state_dict(),
                       texture_spectrum=run.texture_spectrum())
    save_checkpoint(model_path, "model", payload)
    write_json_atomic(workdir / SUMMARY_FILE, summary)
    log.info("%s generator trained: %d steps in %.1f s (diffusion loss %.4f)", cfg.kind, run.step, run.seconds,
             summary["final_unet_mse"] or float("nan"))
    return summary
