"""Lazy package faces: public names resolved on first use.

Why: ``fedsynth --help`` imports every stage's ``commands.py``, and through
them the stage packages; if a package face imported its modules eagerly the
help text would wait for torch, MONAI and faiss. Every face therefore names
its exports in one map and imports a module only when one of its names is
first used (the value is then cached in the package, so later uses cost
nothing). A face looks like::

    exports = {"ingest_site": "fedsynth.data.ingest", "open_store": "fedsynth.data.store"}
    __getattr__, __dir__, __all__ = lazy_exports(__name__, exports)

A value ``"module:attribute"`` exports ``attribute`` of ``module`` under the
key's name (an alias, e.g. a historical name of a function that moved).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for the package ``package`` exporting ``exports``.

    ``exports`` maps each public name to the module that defines it
    (``"fedsynth.pkg.module"``, or ``"fedsynth.pkg.module:attribute"`` for an alias).
    """
    table = dict(exports)

    def __getattr__(name: str) -> Any:
        target = table.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = target.partition(":")
        value = getattr(importlib.import_module(module), attribute or name)
        setattr(sys.modules[package], name, value)  # later look-ups bypass __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *table})

    return __getattr__, __dir__, sorted(table)
