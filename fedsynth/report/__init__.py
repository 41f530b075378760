"""The study's evidence: statistics, ``report.json`` (validated schema), ``report.html``.

>>> rep = {"methods": summarise(scores), "comparisons": compare(scores, "real", DEFAULT_MARGINS)}
>>> rep["patient_comparisons"] = add_verdicts([{"a": "synthetic", "b": "real",
...     **compare_by_patient(scores["synthetic"], scores["real"], test_patients, "psnr", 0.5)}])
>>> render_html(write_report(out, rep), out / "report.html")   # self-contained, opens offline

Why it imports none of the stages whose results it reports (privacy,
generative, tasks, federation): ``fedsynth.tasks`` and ``fedsynth.federation``
use it, so a dependency back would be a cycle. Names are imported on first use
(:func:`fedsynth.lazy.lazy_exports`), so ``fedsynth --help`` (which imports
``fedsynth.report.commands``) stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedsynth.lazy import lazy_exports

exports = {
    "DEFAULT_MARGINS": "fedsynth.report.stats",
    "ReportModel": "fedsynth.report.schema",
    "add_verdicts": "fedsynth.report.patients",
    "bootstrap_ci": "fedsynth.report.stats",
    "compare": "fedsynth.report.summary",
    "compare_by_patient": "fedsynth.report.patients",
    "holm": "fedsynth.report.patients",
    "load_report": "fedsynth.report.schema",
    "paired_comparison": "fedsynth.report.stats",
    "per_patient": "fedsynth.report.patients",
    "render_html": "fedsynth.report.html",
    "summarise": "fedsynth.report.summary",
    "tost_paired": "fedsynth.report.stats",
    "validate_report": "fedsynth.report.schema",
    "write_report": "fedsynth.report.writer",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, exports)

if TYPE_CHECKING:  # pragma: no cover
    from fedsynth.report.html import render_html  # noqa: F401
    from fedsynth.report.patients import add_verdicts, compare_by_patient, holm, per_patient  # noqa: F401
    from fedsynth.report.schema import ReportModel, load_report, validate_report  # noqa: F401
    from fedsynth.report.stats import (  # noqa: F401
        DEFAULT_MARGINS,
        bootstrap_ci,
        paired_comparison,
        tost_paired,
    )
    from fedsynth.report.summary import compare, summarise  # noqa: F401
    from fedsynth.report.writer import write_report  # noqa: F401
