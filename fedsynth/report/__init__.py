"""The study's evidence: ``report.json`` (validated schema) and a self-contained ``report.html``.

    >>> methods = summarise(per_image)                        # {method: {site: {metric: array}}}
    >>> comparisons = compare(per_image, reference_method="real", margins={"psnr": 0.5, "ssim": 0.01})
    >>> path = write_report(out_dir, {"methods": methods, "comparisons": comparisons, "wall_seconds": 12.0})
    >>> render_html(path, out_dir / "report.html")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Lazy exports, so ``fedsynth --help`` (which imports fedsynth.report.commands) stays fast.
_EXPORTS = {
    "ReportModel": "fedsynth.report.schema",
    "compare": "fedsynth.report.summary",
    "load_report": "fedsynth.report.schema",
    "render_html": "fedsynth.report.html",
    "summarise": "fedsynth.report.summary",
    "validate_report": "fedsynth.report.schema",
    "write_report": "fedsynth.report.writer",
}

if TYPE_CHECKING:  # pragma: no cover
    from fedsynth.report.html import render_html  # noqa: F401
    from fedsynth.report.schema import ReportModel, load_report, validate_report  # noqa: F401
    from fedsynth.report.summary import compare, summarise  # noqa: F401
    from fedsynth.report.writer import write_report  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fedsynth.report' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
