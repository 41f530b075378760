"""Write ``report.json`` atomically, after validating it against the schema."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fedsynth.io_utils import write_json_atomic
from fedsynth.report.schema import ReportModel, validate_report

__all__ = ["write_report"]


def _clean(obj: Any) -> Any:
    """JSON-safe: numpy scalars/arrays to Python, NaN/inf to None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _clean(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_report(out_dir: str | Path, report: dict[str, Any] | ReportModel) -> Path:
    """Validate ``report`` and write ``out_dir/report.json`` atomically; returns the path.

    A model is written with the fields its maker set (``exclude_unset``), so
    optional keys a study never filled do not appear as nulls.
    """
    if isinstance(report, ReportModel):
        data = _clean(report.model_dump(mode="json", exclude_unset=True))
    else:
        data = _clean(report)
    validate_report(data, "report")
    out = Path(out_dir) / "report.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, json.loads(json.dumps(data)))
    return out
