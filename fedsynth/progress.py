"""Progress bars for long work.

Bars go to stderr only when it is a terminal (``disable=None`` in tqdm), and
are removed when done (``leave=False``), so logs, pipes, CI output and the
CLI's one-line errors stay clean.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

__all__ = ["progress"]

T = TypeVar("T")


def progress(iterable: Iterable[T] | None = None, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar that is shown only on a terminal and when ``enabled``."""
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=None if enabled else True, **kwargs)
