"""Networks build by name, learn on a small set, checkpoint/resume, and bad configs fail in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures.images import body_discs

from fedsynth.errors import CheckpointError, ConfigError
from fedsynth.tasks import (
    TaskConfig,
    build_network,
    evaluate_network,
    fit_epochs,
    load_network,
    make_pairs,
    predict,
    train_network,
)
from fedsynth.tasks.config import load_task_config

CASES = [
    ("ldct", "rednet", 8),
    ("ldct", "unet", 8),
    ("ldct", "edsr", 8),
    ("sr", "srcnn", 8),
    ("sr", "edsr", 8),
    ("sr", "unet", 8),
]


@pytest.mark.parametrize(("task", "net", "ch"), CASES)
def test_each_network_builds_and_keeps_shape(task: str, net: str, ch: int) -> None:
    cfg = TaskConfig(task=task, network=net, channels=ch, n_blocks=2)
    model = build_network(cfg)
    y = model(torch.rand(2, 1, 32, 32))
    assert y.shape == (2, 1, 32, 32)
    # seeded init: two builds of the same config are identical (FedAvg needs that)
    again = build_network(cfg)
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_rednet_paper_width_by_config() -> None:
    model = build_network(TaskConfig(task="ldct", channels=96))
    assert model.conv[0].out_channels == 96
    assert build_network(TaskConfig(task="ldct")).conv[0].out_channels < 96  # frugal default


def _mse(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, cfg: TaskConfig) -> float:
    return float(np.mean((predict(model, x, cfg) - y) ** 2))


@pytest.mark.parametrize(
    ("task", "net", "extra"),
    [("ldct", "rednet", {"channels": 8}), ("sr", "srcnn", {"channels": 16, "sr_factor": 4, "patches_per_image": 16, "lr": 1e-3}), ("ldct", "unet", {"channels": 8})],
)
def test_loss_falls_on_a_small_set(task: str, net: str, extra: dict) -> None:
    imgs = body_discs(6, 32, seed=1)
    cfg = TaskConfig(
        task=task, network=net, patch_size=32, batch_size=8, dose_fraction=0.05, **{"lr": 2e-3, **extra},
        **({"pixel_size_mm": 0.8} if task == "ldct" else {}),
    )
    model = build_network(cfg)
    x, y = make_pairs(imgs, cfg, seed=0)
    before = _mse(model, x, y, cfg)
    out = fit_epochs(model, imgs, cfg, epochs=10, seed=0)
    after = _mse(model, x, y, cfg)
    assert out["n"] == 6 and np.isfinite(out["loss"])
    assert len(out["losses"]) == 10
    assert after < 0.8 * before


def test_fit_epochs_fedprox_stays_closer_to_global() -> None:
    imgs = body_discs(4, 32, seed=2)
    cfg = TaskConfig(task="ldct", pixel_size_mm=0.8, network="unet", channels=8, patch_size=32, lr=5e-3)
    start = build_network(cfg).state_dict()
    dist = []
    for mu in (0.0, 10.0):
        model = build_network(cfg)
        fit_epochs(model, imgs, cfg, epochs=3, seed=0, proximal_mu=mu, global_state=start)
        dist.append(sum(float(((model.state_dict()[k] - start[k]) ** 2).sum()) for k in start))
    assert dist[1] < dist[0]


def test_evaluate_network_per_image_metrics() -> None:
    imgs = body_discs(3, 32)
    cfg = TaskConfig(task="ldct", pixel_size_mm=0.8, network="unet", channels=8)
    res = evaluate_network(build_network(cfg), imgs, cfg, seed=1)
    for key in ("psnr", "ssim", "rmse", "rmse_hu", "input_psnr", "input_ssim", "input_rmse"):
        assert res[key].shape == (3,) and np.isfinite(res[key]).all()
    np.testing.assert_allclose(res["rmse_hu"], res["rmse"] * 2000.0)
    res_sr = evaluate_network(build_network(TaskConfig(task="sr", channels=8)), imgs, TaskConfig(task="sr"), 1)
    assert "rmse_hu" not in res_sr


def _small_cfg(**kw: object) -> TaskConfig:
    base = dict(task="ldct", pixel_size_mm=0.8, network="unet", channels=8, patch_size=32, epochs=4,
                early_stopping_patience=10)
    return TaskConfig(**{**base, **kw})


def test_train_network_checkpoint_resume_matches_uninterrupted(tmp_path) -> None:
    imgs = body_discs(6, 32, seed=3)
    full, hist_full = train_network(imgs, _small_cfg(), workdir=tmp_path / "full", progress=False)
    assert (tmp_path / "full" / "model.pt").exists() and (tmp_path / "full" / "checkpoint.pt").exists()
    assert len(hist_full["epochs"]) == 4 and hist_full["n_val"] == 1
    # "killed" after 2 epochs, then resumed to 4
    train_network(imgs, _small_cfg(epochs=2), workdir=tmp_path / "part", progress=False)
    resumed, hist = train_network(imgs, _small_cfg(), workdir=tmp_path / "part", resume=True, progress=False)
    assert [e["epoch"] for e in hist["epochs"]] == [1, 2, 3, 4]
    np.testing.assert_allclose(
        [e["val_loss"] for e in hist["epochs"]], [e["val_loss"] for e in hist_full["epochs"]], rtol=1e-4
    )
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    loaded, cfg = load_network(tmp_path / "full" / "model.pt")
    assert cfg == _small_cfg()
    # refusing to resume from another config or other images
    with pytest.raises(CheckpointError, match="different task config"):
        train_network(imgs, _small_cfg(lr=1e-2), workdir=tmp_path / "part", resume=True, progress=False)
    with pytest.raises(CheckpointError, match="different training images"):
        train_network(imgs[:5], _small_cfg(), workdir=tmp_path / "part", resume=True, progress=False)
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_network(tmp_path / "bad.pt")


def test_early_stopping_keeps_best(tmp_path) -> None:
    imgs = body_discs(5, 32, seed=4)
    cfg = _small_cfg(epochs=30, early_stopping_patience=1, lr=0.5)  # absurd lr: validation loss stops improving
    _, hist = train_network(imgs, cfg, progress=False)
    assert hist["stopped_early"] and len(hist["epochs"]) < 30
    assert hist["best_val_loss"] == min(e["val_loss"] for e in hist["epochs"])


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"task": "ct"}, "task"),
        ({"task": "ldct", "network": "resnet"}, "network"),
        ({"task": "ldct", "lr": 0}, "lr"),
        ({"task": "ldct", "dose_fraction": 2}, "dose_fraction"),
        ({"task": "sr", "patch_size": 30, "sr_factor": 4}, "patch_size"),
        ({"task": "ldct", "epoch": 3}, "epoch"),
    ],
)
def test_bad_config_is_one_line_config_error(data: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_task_config(data)
    msg = str(err.value)
    assert "\n" not in msg and key in msg or "<root>" in msg


def test_task_config_from_toml(tmp_path) -> None:
    p = tmp_path / "task.toml"
    p.write_text('[task]\ntask = "sr"\nsr_factor = 4\n')
    cfg = load_task_config(p, network="edsr", epochs=None)
    assert (cfg.task, cfg.sr_factor, cfg.network) == ("sr", 4, "edsr")
    p.write_text('task = "ldct"\nlr = "fast"\n')
    with pytest.raises(ConfigError, match="task.toml: key 'lr'"):
        load_task_config(p)
    with pytest.raises(ConfigError, match="no such file"):
        load_task_config(tmp_path / "missing.toml")
