"""Build a task network by name from a :class:`~fedsynth.tasks.TaskConfig`.

Initialisation is seeded from ``cfg.seed`` inside a forked RNG, so two sites
building the same config get identical initial weights (FedAvg needs that)
without disturbing the caller's global random state.
"""

from __future__ import annotations

import torch
from torch import nn

from fedsynth.tasks.config import TaskConfig
from fedsynth.tasks.networks.edsr import EDSR
from fedsynth.tasks.networks.rednet import REDCNN
from fedsynth.tasks.networks.srcnn import SRCNN

__all__ = ["ResidualUNet", "build_network", "network_input_multiple"]


class ResidualUNet(nn.Module):
    """MONAI ``BasicUNet`` predicting the residual (output = input + UNet(input)), as DnCNN does.

    Shapes: (B, 1, H, W) -> (B, 1, H, W), H and W multiples of 16.
    """

    def __init__(self, features: int = 16) -> None:
        super().__init__()
        from monai.networks.nets import BasicUNet

        f = features
        self.unet = BasicUNet(
            spatial_dims=2, in_channels=1, out_channels=1, features=(f, f, 2 * f, 4 * f, 8 * f, f)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.unet(x)


def network_input_multiple(cfg: TaskConfig) -> int:
    """Image and patch edges must be multiples of this for ``cfg.network``."""
    if cfg.network == "unet":
        return 16
    if cfg.network == "edsr" and cfg.task == "sr":
        return cfg.sr_factor
    return 1


def build_network(cfg: TaskConfig) -> nn.Module:
    """A freshly initialised network for ``cfg`` (1 channel in, 1 channel out, same size)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if cfg.network == "rednet":
            return REDCNN(channels=cfg.channels or 16)  # 96 in the paper; 16 fits the 2-core budget
        if cfg.network == "srcnn":
            f1 = cfg.channels or 64
            return SRCNN(f1=f1, f2=max(1, f1 // 2))
        if cfg.network == "unet":
            return ResidualUNet(features=cfg.channels or 16)
        if cfg.network == "edsr":
            factor = cfg.sr_factor if cfg.task == "sr" else 1
            return EDSR(factor=factor, channels=cfg.channels or 32, n_blocks=cfg.n_blocks)
    raise ValueError(f"unknown network {cfg.network!r}")  # pragma: no cover - Literal-validated

