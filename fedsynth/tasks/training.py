"""Training a task network: patch-based Adam, validation split, early stopping, checkpoint/resume.

Two entry points:

* :func:`fit_epochs` trains an existing model in place for a few epochs, the
  unit of work of one federated round (with an optional FedProx proximal
  term towards the global weights).
* :func:`train_network` trains from scratch to convergence: validation split,
  early stopping on validation MSE, best weights kept, and an atomic
  checkpoint after every epoch so a killed run resumes where it stopped.

Randomness is derived from ``(seed, epoch)``, never from a running generator,
so a resumed run draws exactly the patches the uninterrupted run would have.

    >>> model, history = train_network(images, TaskConfig(task="ldct"), workdir=Path("run"))
"""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedsynth.devices import resolve_device
from fedsynth.digests import array_digest
from fedsynth.errors import CheckpointError, DataError
from fedsynth.io_utils import write_bytes_atomic, write_json_atomic
from fedsynth.progress import progress as progress_bar
from fedsynth.tasks.config import TaskConfig
from fedsynth.tasks.degrade import check_images, make_pairs
from fedsynth.tasks.networks import build_network, network_input_multiple

__all__ = [
    "CHECKPOINT_FORMAT",
    "fit_epochs",
    "load_network",
    "load_optimizer_arrays",
    "make_optimizer",
    "optimizer_arrays",
    "optimizer_step_count",
    "predict",
    "save_network",
    "train_network",
]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "fedsynth.tasks.checkpoint/1"
MODEL_FORMAT = "fedsynth.tasks.model/1"
_MIN_PATCH = {"rednet": 21, "srcnn": 9, "unet": 32, "edsr": 8}  # unet: 4 poolings, instance norm needs > 1 px


def _patch_edge(cfg: TaskConfig, shape: tuple[int, int]) -> int:
    mult = network_input_multiple(cfg)
    edge = min(cfg.patch_size, *shape)
    edge -= edge % mult
    if edge < _MIN_PATCH[cfg.network]:
        raise DataError(
            f"images of {shape[0]}x{shape[1]} are too small for {cfg.network} "
            f"(patches need >= {_MIN_PATCH[cfg.network]} px, multiple of {mult})"
        )
    return edge


def _patches(
    inputs: np.ndarray, targets: np.ndarray, edge: int, per_image: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``per_image`` random aligned crops from every pair, shuffled: two (M, 1, edge, edge) arrays."""
    n, h, w = inputs.shape
    idx = np.repeat(np.arange(n), per_image)
    ys = rng.integers(0, h - edge + 1, size=idx.size)
    xs = rng.integers(0, w - edge + 1, size=idx.size)
    order = rng.permutation(idx.size)
    idx, ys, xs = idx[order], ys[order], xs[order]
    win = np.arange(edge)
    rows = (ys[:, None] + win)[:, :, None]
    cols = (xs[:, None] + win)[:, None, :]
    x = inputs[idx[:, None, None], rows, cols][:, None]
    y = targets[idx[:, None, None], rows, cols][:, None]
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def _train_one_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    inputs: np.ndarray,
    targets: np.ndarray,
    cfg: TaskConfig,
    rng: np.random.Generator,
    proximal_mu: float = 0.0,
    global_params: dict[str, torch.Tensor] | None = None,
) -> tuple[float, int]:
    """One pass over fresh random patches; returns (mean MSE, number of patches)."""
    device = next(model.parameters()).device
    edge = _patch_edge(cfg, inputs.shape[1:])
    x_all, y_all = _patches(inputs, targets, edge, cfg.patches_per_image, rng)
    model.train()
    total, count = 0.0, 0
    for s in range(0, len(x_all), cfg.batch_size):
        x = torch.from_numpy(x_all[s : s + cfg.batch_size]).to(device)
        y = torch.from_numpy(y_all[s : s + cfg.batch_size]).to(device)
        mse = F.mse_loss(model(x), y)
        loss = mse
        if proximal_mu > 0 and global_params is not None:
            prox = sum(((p - global_params[name]) ** 2).sum() for name, p in model.named_parameters())
            loss = mse + 0.5 * proximal_mu * prox
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(mse.detach()) * len(x)
        count += len(x)
    return total / max(count, 1), count


def predict(model: nn.Module, inputs: np.ndarray, cfg: TaskConfig, batch_size: int = 16) -> np.ndarray:
    """Run ``model`` on whole images (N, H, W) -> (N, H, W) float32 clipped to [0, 1].

    Images whose size is not a multiple the network needs are reflect-padded and cropped back.
    """
    device = next(model.parameters()).device
    mult = network_input_multiple(cfg)
    n, h, w = inputs.shape
    ph, pw = (-h) % mult, (-w) % mult
    out = np.empty((n, h, w), dtype=np.float32)
    model.eval()
    with torch.no_grad():
        for s in range(0, n, batch_size):
            x = torch.from_numpy(np.array(inputs[s : s + batch_size], dtype=np.float32))  # a writable copy
            x = x.unsqueeze(1).to(device)
            if ph or pw:
                x = F.pad(x, (0, pw, 0, ph), mode="reflect")
            y = model(x)[:, 0, :h, :w].clamp(0.0, 1.0)
            out[s : s + len(x)] = y.cpu().numpy()
    return out


def fit_epochs(
    model: nn.Module,
    images: np.ndarray,
    cfg: TaskConfig,
    epochs: int,
    seed: int,
    proximal_mu: float = 0.0,
    global_state: dict[str, Any] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    first_epoch: int = 0,
    pixel_mm: float | np.ndarray | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place for ``epochs`` epochs on clean ``images`` (degraded here with ``seed``).

    ``optimizer`` continues an existing Adam (its moments and step count), as
    a method trained in chunks between validations or a FedAvg client that
    keeps its state across rounds must; without one a fresh Adam is made.
    Patches of epoch ``e`` are drawn from ``(seed, first_epoch + e)``, so
    chunks of one training never repeat each other's draws. With
    ``proximal_mu > 0`` the loss adds ``mu/2 * ||w - w_global||^2`` (FedProx);
    ``global_state`` defaults to the model's weights at entry. ``pixel_mm``:
    each image's pixel size (low-dose CT, see :func:`make_pairs`). Returns
    ``{"loss": last epoch's mean MSE, "n": number of training images,
    "n_patches": patches per epoch, "steps": optimiser steps taken, "losses":
    per-epoch MSE, "seconds": wall time}``.
    """
    t0 = time.perf_counter()
    images = check_images(images, "training images")
    device = next(model.parameters()).device
    inputs, targets = make_pairs(images, cfg, seed, pixel_mm)
    global_params = None
    if proximal_mu > 0:
        src = global_state if global_state is not None else model.state_dict()
        global_params = {
            name: torch.as_tensor(np.asarray(src[name]) if not torch.is_tensor(src[name]) else src[name])
            .detach()
            .clone()
            .to(device=device, dtype=p.dtype)
            for name, p in model.named_parameters()
        }
    opt = optimizer if optimizer is not None else make_optimizer(model, cfg)
    losses: list[float] = []
    n_patches = 0
    for epoch in range(first_epoch, first_epoch + epochs):
        rng = np.random.default_rng([seed, epoch])
        loss, n_patches = _train_one_epoch(model, opt, inputs, targets, cfg, rng, proximal_mu, global_params)
        losses.append(loss)
    return {
        "loss": losses[-1] if losses else float("nan"),
        "n": int(len(images)),
        "n_patches": int(n_patches),
        "steps": int(epochs * -(-n_patches // cfg.batch_size)),
        "losses": losses,
        "seconds": time.perf_counter() - t0,
    }


def make_optimizer(model: nn.Module, cfg: TaskConfig) -> torch.optim.Optimizer:
    """The optimiser every method uses: Adam at ``cfg.lr``."""
    return torch.optim.Adam(model.parameters(), lr=cfg.lr)


def optimizer_arrays(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """An Adam's per-parameter state as flat named tensors (``<param index>.<name>``), e.g. for an ArrayRecord."""
    out: dict[str, torch.Tensor] = {}
    for idx, st in opt.state_dict()["state"].items():
        for name, value in st.items():
            out[f"{idx}.{name}"] = torch.as_tensor(value).detach().cpu().clone()
    return out


def load_optimizer_arrays(opt: torch.optim.Optimizer, arrays: dict[str, Any]) -> None:
    """Restore what :func:`optimizer_arrays` saved into ``opt`` (same model, same parameter order)."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in arrays.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = torch.as_tensor(np.asarray(value) if not torch.is_tensor(value)
                                                               else value)
    sd = opt.state_dict()
    opt.load_state_dict({"state": state, "param_groups": sd["param_groups"]})


def optimizer_step_count(opt: torch.optim.Optimizer) -> int:
    """How many steps an Adam has taken over its life (0 for a fresh one)."""
    steps = [int(st["step"]) for st in opt.state_dict()["state"].values() if "step" in st]
    return max(steps, default=0)


def _val_loss(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, cfg: TaskConfig) -> float:
    pred = predict(model, inputs, cfg)
    return float(np.mean((pred.astype(np.float64) - targets) ** 2))


def _to_bytes(obj: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _load(path: Path, fmt: str) -> dict[str, Any]:
    try:
        obj = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except Exception as err:  # corrupt or truncated file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__})") from None
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        raise CheckpointError(f"{path}: not a {fmt} file")
    return obj


def save_network(model: nn.Module, cfg: TaskConfig, path: str | Path) -> None:
    """Write the weights and the config that built them, atomically, so loading needs nothing else."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    write_bytes_atomic(path, _to_bytes({"format": MODEL_FORMAT, "config": cfg.model_dump(mode="json"), "model": state}))


def load_network(path: str | Path) -> tuple[nn.Module, TaskConfig]:
    """Load a model written by :func:`save_network` (raises :class:`CheckpointError` if unusable)."""
    path = Path(path)
    obj = _load(path, MODEL_FORMAT)
    try:
        cfg = TaskConfig.model_validate(obj["config"])
        model = build_network(cfg)
        model.load_state_dict(obj["model"])
    except Exception as err:
        raise CheckpointError(f"{path}: weights do not match their config ({type(err).__name__})") from None
    return model, cfg


def _split(n: int, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng([seed, 1_000_003]).permutation(n)
    n_val = int(round(frac * n)) if n >= 2 else 0
    n_val = min(max(n_val, 1 if frac > 0 and n >= 2 else 0), n - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def train_network(
    train_images: np.ndarray,
    cfg: TaskConfig,
    workdir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    pixel_mm: float | np.ndarray | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``cfg.network`` on clean ``train_images`` (N, H, W); returns (best model, history).

    A ``val_fraction`` share of the images (at least one) is held out; training
    stops after ``early_stopping_patience`` epochs without a lower validation
    MSE and the best weights are returned. With ``workdir`` a checkpoint is
    written atomically after every epoch (``checkpoint.pt``) plus the final
    ``model.pt`` and ``history.json``; ``resume=True`` continues from the
    checkpoint, which must come from the same config and the same images.
    ``pixel_mm``: each image's pixel size (low-dose CT, see :func:`make_pairs`).
    """
    t0 = time.perf_counter()
    images = check_images(train_images, "training images")
    device = resolve_device(cfg.device)
    tr_idx, va_idx = _split(len(images), cfg.val_fraction, cfg.seed)
    inputs, targets = make_pairs(images, cfg, cfg.seed, pixel_mm)
    tr_x, tr_y, va_x, va_y = inputs[tr_idx], targets[tr_idx], inputs[va_idx], targets[va_idx]
    _patch_edge(cfg, images.shape[1:])  # fail early on too-small images

    model = build_network(cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    fingerprint = array_digest(images)
    ckpt_path = Path(workdir) / "checkpoint.pt" if workdir is not None else None
    start_epoch, best_val, bad_epochs = 0, float("inf"), 0
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    epochs_log: list[dict[str, Any]] = []
    if resume and ckpt_path is not None and ckpt_path.exists():
        ck = _load(ckpt_path, CHECKPOINT_FORMAT)
        saved = TaskConfig.model_validate(ck["config"])
        if saved.data_fingerprint_fields() != cfg.data_fingerprint_fields():
            raise CheckpointError(f"{ckpt_path}: written for a different task config; refusing to resume")
        if ck["data_sha256"] != fingerprint:
            raise CheckpointError(f"{ckpt_path}: written for different training images; refusing to resume")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start_epoch, best_val, bad_epochs = int(ck["epoch"]), float(ck["best_val"]), int(ck["bad_epochs"])
        best_state = {k: v.to(device) for k, v in ck["best_state"].items()}
        epochs_log = [dict(e) for e in ck["history"]]
        log.info("resumed from %s after epoch %d", ckpt_path, start_epoch)

    stopped_early = bad_epochs >= cfg.early_stopping_patience
    bar = progress_bar(range(start_epoch, cfg.epochs), enabled=progress, desc=f"train {cfg.network}", unit="epoch")
    for epoch in bar:
        if stopped_early:
            break
        te = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, epoch])
        train_loss, _ = _train_one_epoch(model, opt, tr_x, tr_y, cfg, rng)
        val_loss = _val_loss(model, va_x, va_y, cfg) if len(va_idx) else train_loss
        if val_loss < best_val:
            best_val, bad_epochs = val_loss, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        epochs_log.append(
            {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss, "seconds": time.perf_counter() - te}
        )
        bar.set_postfix(train=f"{train_loss:.2e}", val=f"{val_loss:.2e}")
        stopped_early = bad_epochs >= cfg.early_stopping_patience
        if ckpt_path is not None:
            write_bytes_atomic(
                ckpt_path,
                _to_bytes(
                    {
                        "format": CHECKPOINT_FORMAT,
                        "config": cfg.model_dump(mode="json"),
                        "data_sha256": fingerprint,
                        "epoch": epoch + 1,
                        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                        "optimizer": opt.state_dict(),
                        "best_val": best_val,
                        "bad_epochs": bad_epochs,
                        "best_state": {k: v.detach().cpu() for k, v in best_state.items()},
                        "history": epochs_log,
                    }
                ),
            )
    bar.close()
    model.load_state_dict(best_state)
    best_epoch = min(epochs_log, key=lambda e: e["val_loss"])["epoch"] if epochs_log else 0
    history = {
        "epochs": epochs_log,
        "best_epoch": best_epoch,
        "best_val_loss": best_val,
        "stopped_early": stopped_early,
        "n_train": int(len(tr_idx)),
        "n_val": int(len(va_idx)),
        "seconds": time.perf_counter() - t0,
    }
    if workdir is not None:
        save_network(model, cfg, Path(workdir) / "model.pt")
        write_json_atomic(Path(workdir) / "history.json", json.loads(json.dumps(history, default=float)))
    return model, history
