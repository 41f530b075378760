"""Train a site's latent diffusion model: autoencoder, then diffusion on its latents.

Why two phases: the autoencoder compresses each slice by ``2**(levels-1)`` per
edge, so the diffusion UNet (the expensive, many-step part) works on a small
latent grid. The autoencoder is frozen after phase one; its latents (posterior
means) are computed once and cached in memory, and standardised per channel
(shift = channel mean, scale = 1/channel std, over all training latents) before
the diffusion model sees them. Why per channel and centred: a KL autoencoder
with a tiny KL weight gives channels with different offsets and spreads (on
the bundled CT cohort channel means of -3.6..-0.4 at stds of 1.4..2.8); one
global ``1/std`` of a first batch, as the MONAI tutorials do, leaves a
non-zero mean and unequal variances that the noise prior N(0, I) does not
match. Shift and scale are stored with the model and undone before decoding.

The autoencoder may train on random crops (``ae_patch_size``, cheap) and
finish with the last ``ae_full_fraction`` of its epochs on whole images: GroupNorm statistics
of a crop differ from those of a whole slice, and without the whole-image
epochs the reconstruction of whole slices is several dB worse.

Robustness: after every epoch the whole training state (networks, optimizers,
EMA, LR schedulers, RNG states, stage/epoch/step, history) is written
atomically to ``train_state.pt``. ``resume=True`` reloads it and continues
exactly where it stopped; all randomness comes from one seeded
``torch.Generator`` whose state is saved, so on CPU an interrupted and resumed
run matches an uninterrupted one. When training ends ``model.pt`` (what
sampling needs) is written; a finished run resumed is a no-op.

>>> cfg = load_profile("tiny")
>>> summary = train_ldm(images, Path("work/gen"), cfg)   # images: (N, H, W) float32 in [0, 1]
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
from fedsynth.generative.networks import (
    build_autoencoder,
    build_discriminator,
    build_noise_scheduler,
    build_unet,
)
from fedsynth.io_utils import write_json_atomic
from fedsynth.progress import progress as progress_bar

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

    def __init__(self, cfg: LDMConfig, x: torch.Tensor, device: torch.device) -> None:
        self.cfg, self.x, self.device = cfg, x, device
        self.n = len(x)
        torch.manual_seed(cfg.seed)
        self.ae = build_autoencoder(cfg).to(device)
        self.unet = build_unet(cfg).to(device)
        self.ema = copy.deepcopy(self.unet).requires_grad_(False)
        self.disc = build_discriminator(cfg).to(device) if cfg.adv_weight > 0 else None
        self.noise = build_noise_scheduler(cfg)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        ae_steps = cfg.ae_epochs * self.batches(cfg.ae_batch_size)
        un_steps = cfg.unet_epochs * self.batches(cfg.unet_batch_size)
        self.ae_opt = torch.optim.AdamW(self.ae.parameters(), lr=cfg.ae_lr, weight_decay=cfg.weight_decay)
        self.ae_sched = torch.optim.lr_scheduler.LambdaLR(
            self.ae_opt, _lr_lambda(ae_steps, cfg.warmup_steps, cfg.lr_min_ratio))
        self.un_opt = torch.optim.AdamW(self.unet.parameters(), lr=cfg.unet_lr, weight_decay=cfg.weight_decay)
        self.un_sched = torch.optim.lr_scheduler.LambdaLR(
            self.un_opt, _lr_lambda(un_steps, cfg.warmup_steps, cfg.lr_min_ratio))
        self.d_opt = (torch.optim.AdamW(self.disc.parameters(), lr=cfg.ae_lr, weight_decay=cfg.weight_decay)
                      if self.disc is not None else None)
        self.stage, self.epoch, self.step, self.ema_updates = "ae", 0, 0, 0
        self.scale: list[float] | None = None  # per latent channel: z = (mu - shift) * scale
        self.shift: list[float] | None = None
        self.history: dict[str, list[dict[str, float]]] = {"ae": [], "unet": []}
        self.seconds = 0.0
        self.latents: torch.Tensor | None = None
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
            "history": json.dumps(self.history), "seconds": self.seconds,
            "ae": self.ae.state_dict(), "unet": self.unet.state_dict(), "ema": self.ema.state_dict(),
            "disc": opt(self.disc), "ae_opt": self.ae_opt.state_dict(), "ae_sched": self.ae_sched.state_dict(),
            "un_opt": self.un_opt.state_dict(), "un_sched": self.un_sched.state_dict(), "d_opt": opt(self.d_opt),
            "rng_generator": self.gen.get_state(), "rng_torch": torch.get_rng_state(),
        }

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.ae.load_state_dict(s["ae"])
        self.unet.load_state_dict(s["unet"])
        self.ema.load_state_dict(s["ema"])
        if self.disc is not None:
            self.disc.load_state_dict(s["disc"])
            self.d_opt.load_state_dict(s["d_opt"])
        self.ae_opt.load_state_dict(s["ae_opt"])
        self.ae_sched.load_state_dict(s["ae_sched"])
        self.un_opt.load_state_dict(s["un_opt"])
        self.un_sched.load_state_dict(s["un_sched"])
        self.gen.set_state(s["rng_generator"])
        torch.set_rng_state(s["rng_torch"])
        self.stage, self.epoch, self.step = str(s["stage"]), int(s["epoch"]), int(s["step"])
        self.ema_updates = int(s["ema_updates"])
        self.scale = None if s["scale"] is None else [float(v) for v in s["scale"]]
        self.shift = None if s["shift"] is None else [float(v) for v in s["shift"]]
        self.history = json.loads(s["history"])
        self.seconds = float(s["seconds"])

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
            self._after_step(loss.item())
        return {"l1": tot / count, "kl": totkl / count}

    @property
    def down(self) -> int:
        return 2 ** (len(self.cfg.ae_channels) - 1)

    @torch.no_grad()
    def encode_all(self) -> torch.Tensor:
        """Posterior means of every training image (the frozen autoencoder is deterministic)."""
        self.ae.eval()
        bs = max(self.cfg.unet_batch_size, 1)
        mus = [self.ae.encode(self.x[i:i + bs].to(self.device))[0].float().cpu() for i in range(0, self.n, bs)]
        return torch.cat(mus)

    @torch.no_grad()
    def texture_spectrum(self) -> list[list[float]]:
        """Power spectrum of what the frozen autoencoder leaves out of the training slices (see texture.py)."""
        from fedsynth.generative.texture import fit_texture_spectrum

        assert self.latents is not None and self.scale is not None and self.shift is not None
        self.ae.eval()
        bs = max(self.cfg.unet_batch_size, 1)
        shift, scale = (torch.tensor(v).view(1, -1, 1, 1) for v in (self.shift, self.scale))
        mus = self.latents / scale + shift  # the cached posterior means: no second encoding pass
        recon = torch.cat([self.ae.decode(mus[i:i + bs].to(self.device)).float().cpu() for i in range(0, self.n, bs)])
        return fit_texture_spectrum(self.x, recon).tolist()

    def standardise(self, mus: torch.Tensor) -> None:
        """Fit (once) the per-channel shift/scale and cache the standardised training latents."""
        if self.scale is None or self.shift is None:
            self.shift = mus.mean(dim=(0, 2, 3)).tolist()
            self.scale = (1.0 / mus.std(dim=(0, 2, 3)).clamp_min(1e-6)).tolist()
        shift, scale = (torch.tensor(v).view(1, -1, 1, 1) for v in (self.shift, self.scale))
        self.latents = (mus - shift) * scale

    def unet_epoch(self) -> dict[str, float]:
        cfg, tot, count = self.cfg, 0.0, 0
        assert self.latents is not None
        self.unet.train()
        for ids in self._batch_ids(cfg.unet_batch_size):
            z0 = self.latents[ids]
            noise = torch.randn(z0.shape, generator=self.gen)
            t = torch.randint(0, cfg.train_timesteps, (len(ids),), generator=self.gen)
            zt = self.noise.add_noise(z0, noise, t)
            target = noise if cfg.prediction_type == "epsilon" else self.noise.get_velocity(z0, noise, t)
            zt, t, target = zt.to(self.device), t.to(self.device), target.to(self.device)
            with self.autocast():
                pred = self.unet_fwd(zt, timesteps=t)
            loss = F.mse_loss(pred.float(), target)
            self.un_opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.unet.parameters(), cfg.grad_clip)
            self.un_opt.step()
            self.un_sched.step()
            self._ema_update()
            tot += loss.item() * len(ids)
            count += len(ids)
            self._after_step(loss.item())
        return {"mse": tot / count}

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


def _summary(run: _Run, workdir: Path, resumed: bool) -> dict[str, Any]:
    return {
        "profile": run.cfg.profile, "image_size": run.cfg.image_size, "n_images": run.n,
        "steps": run.step, "stage": run.stage, "latent_scale": run.scale, "latent_shift": run.shift,
        "resumed": resumed,
        "train_seconds": round(run.seconds, 2), "history": run.history,
        "final_ae_l1": run.history["ae"][-1]["l1"] if run.history["ae"] else None,
        "final_unet_mse": run.history["unet"][-1]["mse"] if run.history["unet"] else None,
        "model": str(workdir / MODEL_FILE),
    }


def train_ldm(
    images: np.ndarray,
    workdir: Path,
    cfg: LDMConfig,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train autoencoder then latent diffusion on ``images``; return the training summary.

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
    fp = "sha256:" + array_digest(x.numpy())  # a resume on other images is refused
    model_path, state_path = workdir / MODEL_FILE, workdir / STATE_FILE
    device = resolve_device(cfg.device)
    if resume and model_path.exists():
        model = load_checkpoint(model_path, "model")
        _check_compatible(model, cfg, fp, model_path)
        log.info("%s: training already finished; nothing to do", model_path)
        summary = json.loads(model["summary"])
        summary["resumed"] = True
        return summary
    run = _Run(cfg, x, device)
    resumed = False
    if resume and state_path.exists():
        state = load_checkpoint(state_path, "train_state")
        _check_compatible(state, cfg, fp, state_path)
        try:
            run.load_state_dict(state)
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            raise CheckpointError(f"{state_path}: incompatible training state ({str(err).splitlines()[0][:100]})") \
                from None
        resumed = True
        log.info("resuming from %s: stage %s, epoch %d, step %d", state_path, run.stage, run.epoch, run.step)
    elif not resume:
        model_path.unlink(missing_ok=True)

    def checkpoint() -> None:
        save_checkpoint(state_path, "train_state", {**run.state_dict(), "data_fingerprint": fp})

    ae_total = cfg.ae_epochs * run.batches(cfg.ae_batch_size)
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
    if run.epoch == 0 and run.stage == "unet":
        log.info("autoencoder done (L1 %.4f); encoding %d latents",
                 run.history["ae"][-1]["l1"] if run.history["ae"] else float("nan"), run.n)
    run.standardise(run.encode_all())
    done = run.step - ae_total
    run.bar = progress_bar(total=un_total, initial=max(0, done), enabled=progress, desc="diffusion", unit="step")
    while run.epoch < cfg.unet_epochs:
        t0 = time.perf_counter()
        stats = run.unet_epoch()
        run.epoch += 1
        run.seconds += time.perf_counter() - t0
        run.history["unet"].append({"epoch": run.epoch, "step": run.step, **stats,
                                    "seconds": round(time.perf_counter() - t0, 3)})
        if run.epoch % cfg.checkpoint_every == 0 or run.epoch == cfg.unet_epochs:
            checkpoint()
    run.bar.close()
    run.stage = "done"
    summary = _summary(run, workdir, resumed)
    save_checkpoint(model_path, "model", {
        "config": cfg.model_dump_json(), "data_fingerprint": fp, "scale": run.scale, "shift": run.shift,
        "ae": run.ae.state_dict(), "unet": run.ema.state_dict(), "summary": json.dumps(summary),
        "texture_spectrum": run.texture_spectrum(),
    })
    write_json_atomic(workdir / SUMMARY_FILE, summary)
    log.info("LDM trained: %d steps in %.1f s (AE L1 %.4f, diffusion MSE %.4f)", run.step, run.seconds,
             summary["final_ae_l1"] or float("nan"), summary["final_unet_mse"] or float("nan"))
    return summary
