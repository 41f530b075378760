"""RED-CNN: residual encoder-decoder CNN for low-dose CT (Chen et al., IEEE TMI 2017).

Five 5x5 valid convolutions, five 5x5 transposed convolutions, and three
shortcuts (input -> output, and two symmetric skips), ReLU throughout; the
paper uses 96 feature maps. MONAI has no RED-CNN, hence this file.

Shapes: (B, 1, H, W) -> (B, 1, H, W) for any H, W >= 21.

    >>> net = REDCNN(channels=96)
    >>> y = net(torch.rand(2, 1, 64, 64))
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["REDCNN"]


class REDCNN(nn.Module):
    """RED-CNN with ``channels`` feature maps per layer (96 for paper parity)."""

    def __init__(self, channels: int = 96, kernel_size: int = 5) -> None:
        super().__init__()
        k = kernel_size
        self.conv = nn.ModuleList(
            [nn.Conv2d(1, channels, k)] + [nn.Conv2d(channels, channels, k) for _ in range(4)]
        )
        self.tconv = nn.ModuleList(
            [nn.ConvTranspose2d(channels, channels, k) for _ in range(4)] + [nn.ConvTranspose2d(channels, 1, k)]
        )
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res1 = x
        out = self.relu(self.conv[0](x))
        out = self.relu(self.conv[1](out))
        res2 = out
        out = self.relu(self.conv[2](out))
        out = self.relu(self.conv[3](out))
        res3 = out
        out = self.relu(self.conv[4](out))
        out = self.tconv[0](out) + res3
        out = self.tconv[1](self.relu(out))
        out = self.tconv[2](self.relu(out)) + res2
        out = self.tconv[3](self.relu(out))
        out = self.tconv[4](self.relu(out)) + res1
        return self.relu(out)
