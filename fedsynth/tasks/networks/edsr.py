"""EDSR-style residual super-resolution network with MONAI's sub-pixel upsampling.

EDSR (Lim et al., CVPRW 2017) runs its residual blocks (conv-ReLU-conv,
residual scaling 0.1, no batch norm) at low resolution and upsamples at the
end with a sub-pixel convolution. fedsynth's SR pairs live on the
high-resolution grid (see :mod:`fedsynth.tasks.sr_sim`), so the network first
folds each ``f x f`` block into channels (``pixel_unshuffle``, lossless),
runs the blocks at ``H/f x W/f`` (f^2 times cheaper than full resolution),
then unfolds with :class:`monai.networks.blocks.SubpixelUpsample` and adds
the input (global residual). With ``factor=1`` it is a plain residual
denoiser usable for low-dose CT.

Shapes: (B, 1, H, W) -> (B, 1, H, W), H and W multiples of ``factor``.

    >>> net = EDSR(factor=2, channels=32, n_blocks=8)
    >>> y = net(torch.rand(2, 1, 64, 64))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EDSR"]


class _ResBlock(nn.Module):
    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.body(x)


class EDSR(nn.Module):
    """EDSR-style network: unshuffle -> head -> residual blocks -> sub-pixel upsample -> + input."""

    def __init__(self, factor: int = 2, channels: int = 32, n_blocks: int = 8, res_scale: float = 0.1) -> None:
        super().__init__()
        from monai.networks.blocks import SubpixelUpsample

        self.factor = factor
        self.head = nn.Conv2d(factor * factor, channels, 3, padding=1)
        self.blocks = nn.Sequential(*[_ResBlock(channels, res_scale) for _ in range(n_blocks)])
        self.tail = nn.Conv2d(channels, channels, 3, padding=1)
        if factor > 1:
            self.up = SubpixelUpsample(
                spatial_dims=2, in_channels=channels, out_channels=1, scale_factor=factor, apply_pad_pool=False
            )
        else:
            self.up = nn.Conv2d(channels, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = F.pixel_unshuffle(x, self.factor) if self.factor > 1 else x
        feat = self.head(low)
        feat = feat + self.tail(self.blocks(feat))
        return x + self.up(feat)
