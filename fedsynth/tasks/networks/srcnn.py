"""SRCNN: three-layer super-resolution CNN (Dong et al., ECCV 2014 / TPAMI 2016).

9x9 -> 5x5 -> 5x5 ("9-5-5") convolutions with 64 and 32 feature maps,
applied to the bicubically (or zero-filled) upsampled low-resolution image.
``same`` padding keeps the size, so the output lines up with the target
pixel for pixel. ``residual=True`` adds the input to the output (the network
then learns only the missing detail; it trains in far fewer steps, which the
CPU budget needs; set it False for the original formulation).

Shapes: (B, 1, H, W) -> (B, 1, H, W).

    >>> net = SRCNN()
    >>> y = net(torch.rand(2, 1, 64, 64))
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SRCNN"]


class SRCNN(nn.Module):
    """SRCNN with ``f1``/``f2`` feature maps (64/32 in the paper)."""

    def __init__(self, f1: int = 64, f2: int = 32, residual: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, f1, 9, padding=4, padding_mode="replicate"),
            nn.ReLU(),
            nn.Conv2d(f1, f2, 5, padding=2, padding_mode="replicate"),
            nn.ReLU(),
            nn.Conv2d(f2, 1, 5, padding=2, padding_mode="replicate"),
        )
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out + x if self.residual else out
