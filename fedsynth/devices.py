"""The torch device a config asks for: ``auto``, ``cpu`` or ``cuda``.

Why one function: every stage that runs torch (generator training and
sampling, task training, the low-dose CT projector) takes the same
``device`` setting, and they must agree on what ``auto`` means and fail the
same way when CUDA is asked for but absent (a one-line :class:`ConfigError`
instead of a CUDA traceback deep inside a training loop). torch is imported
only when a device is resolved, so importing this module stays cheap.

    >>> resolve_device("auto")     # device(type='cuda') with CUDA, else device(type='cpu')
    >>> resolve_device("cuda")     # ConfigError on a machine without CUDA
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedsynth.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["DEVICES", "resolve_device"]

#: The accepted values of every ``device`` setting.
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """The torch device ``name`` asks for (``auto``: CUDA when available, else CPU)."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' requested but no CUDA device is available")
        return torch.device("cuda")
    raise ConfigError(f"unknown device {name!r}; expected one of {', '.join(DEVICES)}")
