"""A plain, dependency-free ``report.html`` for when :mod:`fedsynth.report` is not available."""

from __future__ import annotations

import html
import json
from typing import Any

__all__ = ["plain_html"]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if v is None:
        return "–"
    return html.escape(str(v))


def plain_html(report: dict[str, Any]) -> str:
    """One page: metric table per method and site, comparisons, privacy, bytes, wall time."""
    rows = []
    for name, m in report.get("methods", {}).items():
        for site, r in {**m.get("per_site", {}), "pooled": m.get("pooled", {})}.items():
            rows.append(f"<tr><td>{_fmt(name)}</td><td>{_fmt(site)}</td>"
                        + "".join(f"<td>{_fmt(r.get(k))}</td>" for k in ("psnr", "ssim", "rmse", "n"))
                        + "</tr>")
    comp = "".join(
        "<tr>" + "".join(f"<td>{_fmt(c.get(k))}</td>" for k in ("a", "b", "metric", "mean_diff", "p_ttest",
                                                               "p_tost", "margin")) + "</tr>"
        for c in report.get("comparisons", []))
    notes = "".join(f"<li>{_fmt(n)}</li>" for n in report.get("notes", []))

    def block(key: str) -> str:
        return f"<h2>{key}</h2><pre>{html.escape(json.dumps(report.get(key, {}), indent=2))}</pre>"

    return f"""<!doctype html><html><head><meta charset="utf-8"><title>fedsynth report: {_fmt(report.get('scenario'))}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{border:1px solid #ccc;padding:2px 6px}}table{{border-collapse:collapse}}</style>
</head><body><h1>fedsynth study {_fmt(report.get('scenario'))} ({_fmt(report.get('task'))}, {_fmt(report.get('network'))})</h1>
<h2>Held-out real test slices</h2><table><tr><th>method</th><th>site</th><th>PSNR</th><th>SSIM</th><th>RMSE</th><th>n</th></tr>{''.join(rows)}</table>
<h2>Comparisons</h2><table><tr><th>a</th><th>b</th><th>metric</th><th>mean diff</th><th>p (t-test)</th><th>p (TOST)</th><th>margin</th></tr>{comp}</table>
<h2>Notes</h2><ul>{notes}</ul>
{block('privacy')}{block('communication_bytes')}{block('wall_seconds')}{block('missing_sites')}
</body></html>
"""
