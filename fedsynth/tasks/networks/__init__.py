"""Networks for the downstream tasks, selected by name (see :func:`build_network`).

``rednet`` (RED-CNN) and ``srcnn`` are written here for paper parity (no
maintained package provides them); ``unet`` is MONAI's ``BasicUNet`` with a
global residual; ``edsr`` is an EDSR-style network built around MONAI's
``SubpixelUpsample``.
"""

from __future__ import annotations

from fedsynth.tasks.networks.edsr import EDSR
from fedsynth.tasks.networks.factory import ResidualUNet, build_network, network_input_multiple
from fedsynth.tasks.networks.rednet import REDCNN
from fedsynth.tasks.networks.srcnn import SRCNN

__all__ = ["EDSR", "REDCNN", "SRCNN", "ResidualUNet", "build_network", "network_input_multiple"]
