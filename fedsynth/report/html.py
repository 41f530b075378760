"""``report.html``: one self-contained page (figures as base64 PNG, inline CSS, no scripts, no URLs).

Why self-contained: the report is read on hospital machines that may be
offline and should not fetch anything; one file can be archived with the
study and opened anywhere.

    >>> render_html("runs/demo/report.json", "runs/demo/report.html",
    ...             figures_inputs={"examples": {"input": x, "output": y, "target": t},
    ...                             "samples": {"site-1 real": r, "site-1 synthetic": s}})
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedsynth.io_utils import write_bytes_atomic
from fedsynth.report.figures import (
    crops_figure,
    learning_curves,
    metric_bars,
    patient_plot,
    sample_grid,
)
from fedsynth.report.schema import (
    MetricSummary,
    ReportModel,
    load_report,
    metric_mean,
    validate_report,
)

__all__ = ["render_html"]

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}.eq{color:#176117;font-weight:600}
.neq{color:#8a1f1f}img{max-width:100%}.small{font-size:0.85em;color:#555}pre{background:#f7f7f7;padding:0.5em}
.v-good{background:#e3f2e3;color:#176117;font-weight:600}.v-bad{background:#f8e1e1;color:#8a1f1f;font-weight:600}
.v-none{background:#efefef;color:#555}
"""

#: Verdict -> CSS class of its cell (green-ish good, red bad, grey inconclusive).
_VERDICT_CLASS = {"equivalent": "v-good", "superior": "v-good", "non-inferior": "v-good", "inferior": "v-bad"}


def _e(x: Any) -> str:
    return html.escape(str(x))


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
            return f"{x:.2e}"
        return f"{x:.{digits}g}"
    return _e(x)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _metric_cell(value: Any) -> str:
    if isinstance(value, MetricSummary):
        ci = "" if value.ci_low is None else f' <span class="small">[{_fmt(value.ci_low)}, {_fmt(value.ci_high)}]</span>'
        return f"{_fmt(value.mean)}{ci}"
    return _fmt(value)


def _methods_table(rep: ReportModel) -> str:
    rows = []
    for name, m in rep.methods.items():
        label = f' <span class="small">{_e(m.label)}</span>' if m.label else ""
        for site, sm in [*sorted(m.per_site.items()), ("pooled", m.pooled)]:
            cells = "".join(f"<td>{_metric_cell(getattr(sm, k))}</td>" for k in ("psnr", "ssim", "rmse"))
            rows.append(f"<tr><td>{_e(name)}{label}</td><td>{_e(site)}</td>{cells}<td>{sm.n}</td></tr>")
    head = "<tr><th>method</th><th>site</th><th>PSNR (dB)</th><th>SSIM</th><th>RMSE</th><th>n</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def _ci(lo: float | None, hi: float | None) -> str:
    return "–" if lo is None or hi is None else f"[{_fmt(lo)}, {_fmt(hi)}]"


def _per_seed(c: Any) -> str:
    """The comparison's patient-level mean difference within each seed (one seed: "–")."""
    each = getattr(c, "per_seed", None) or []
    return ", ".join(_fmt(e.get("mean_diff"), 3) for e in each) if len(each) > 1 else "–"


def _budget_warning(rep: ReportModel) -> str:
    """A first-screen warning when trainings were still improving when they stopped (verdicts at a budget)."""
    still = [n for n, t in rep.training.items() if t.epochs and t.best_epoch == t.epochs]
    if not still:
        return ""
    return (f'<p class="v-bad">{len(still)} of {len(rep.training)} trainings kept the weights of their last '
            "validation (still improving when their budget ended): these verdicts compare methods at an equal "
            "budget, not at convergence (see the notes).</p>")


def _verdicts_table(rep: ReportModel) -> str:
    """The study's answers: one row per patient-level comparison, verdict coloured; empty when there are none."""
    if not rep.patient_comparisons:
        return ""
    head = ("<tr><th>a</th><th>b</th><th>metric</th><th>patients</th><th>mean diff (a − b)</th><th>90 % CI</th>"
            "<th>bootstrap 95 % CI</th><th>mixed-model estimate [CI]</th><th>p (t, Holm)</th>"
            "<th>p (TOST, Holm)</th><th>verdict</th><th>each seed: mean diff</th></tr>")
    rows = []
    for c in rep.patient_comparisons:
        direction = "" if c.higher_is_better else ' <span class="small">(lower is better)</span>'
        site = "" if c.site == "pooled" else f' <span class="small">{_e(c.site)}</span>'
        mixed = "–" if c.mixed is None else f"{_fmt(c.mixed.estimate)} {_ci(c.mixed.ci_low, c.mixed.ci_high)}"
        verdict = c.verdict or "–"
        title = f' title="{_e(c.verdict_text)}"' if c.verdict_text else ""
        rows.append(
            f"<tr><td>{_e(c.a)}</td><td>{_e(c.b)}</td><td>{_e(c.metric)}{direction}{site}</td>"
            f"<td>{c.n_patients}</td><td>{_fmt(c.mean_diff)}</td><td>{_ci(c.ci90_low, c.ci90_high)}</td>"
            f"<td>{_ci(c.ci95_low, c.ci95_high)}</td><td>{mixed}</td><td>{_fmt(c.p_ttest_holm)}</td>"
            f"<td>{_fmt(c.p_tost_holm)}</td>"
            f'<td class="{_VERDICT_CLASS.get(verdict, "v-none")}"{title}>{_e(verdict)} (±{_fmt(c.margin)})</td>'
            f"<td>{_per_seed(c)}</td></tr>"
        )
    note = ('<p class="small">Each patient counts once: a patient\'s slices are averaged before testing. '
            "Equivalent when the 90 % CI lies within ±margin (TOST, Holm-adjusted p &lt; 0.05); superior / "
            "inferior by the paired t-test on patients; non-inferior by the one-sided test against the margin. "
            "Holm's correction runs over all rows, one family per kind of test. The bootstrap resamples sites, "
            "then patients within them, and the training seeds when there are several; the mixed model (random intercepts for site and patient) is a "
            "sensitivity check whose Wald CI is optimistic with few sites.</p>")
    return f"<h2>Verdicts (patient as the unit)</h2><table>{head}{''.join(rows)}</table>{note}"


def _comparisons_table(rep: ReportModel) -> str:
    if not rep.comparisons:
        return "<p>No paired comparisons.</p>"
    head = ("<tr><th>a − b</th><th>metric</th><th>site</th><th>n</th><th>mean diff</th><th>95% CI</th>"
            "<th>p (t-test)</th><th>p (Wilcoxon)</th><th>p (TOST)</th><th>margin</th><th>equivalent</th></tr>")
    rows = []
    for c in rep.comparisons:
        eq = c.equivalent if c.equivalent is not None else (c.p_tost is not None and c.p_tost < 0.05)
        ci = "–" if c.ci_low is None else f"[{_fmt(c.ci_low)}, {_fmt(c.ci_high)}]"
        rows.append(
            f"<tr><td>{_e(c.a)} − {_e(c.b)}</td><td>{_e(c.metric)}</td><td>{_e(c.site)}</td><td>{_fmt(c.n)}</td>"
            f"<td>{_fmt(c.mean_diff)}</td><td>{ci}</td><td>{_fmt(c.p_ttest)}</td><td>{_fmt(c.p_wilcoxon)}</td>"
            f"<td>{_fmt(c.p_tost)}</td><td>±{_fmt(c.margin)}</td>"
            f'<td class="{"eq" if eq else "neq"}">{_fmt(bool(eq))}</td></tr>'
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _bars(rep: ReportModel) -> str:
    out = []
    for metric in ("psnr", "ssim", "rmse"):
        rows: dict[str, dict[str, tuple[float | None, float | None, float | None]]] = {}
        for name, m in rep.methods.items():
            rows[name] = {}
            for site, sm in [*m.per_site.items(), ("pooled", m.pooled)]:
                v = getattr(sm, metric)
                if isinstance(v, MetricSummary):
                    rows[name][site] = (v.mean, v.ci_low, v.ci_high)
                else:
                    rows[name][site] = (metric_mean(v), None, None)
        if any(v[0] is not None for r in rows.values() for v in r.values()):
            out.append(_img(metric_bars(rows, metric), f"{metric} per method and site"))
    return "".join(out)


def _training(rep: ReportModel) -> str:
    """Effort per model (the budget each used) and the learning curves of repeat 0."""
    if not rep.training:
        return ""
    rows = "".join(
        f"<tr><td>{_e(name)}</td><td>{t.best_epoch}</td><td>{t.epochs}</td><td>{t.steps}</td><td>{t.samples}</td>"
        f"<td>{_fmt(t.best_val_psnr)}</td><td>{_fmt(t.seconds, 3)}</td></tr>" for name, t in rep.training.items())
    table = ("<table><tr><th>model</th><th>kept epoch</th><th>epochs run</th><th>optimiser steps</th>"
             f"<th>samples seen</th><th>best validation PSNR</th><th>seconds</th></tr>{rows}</table>")
    curves = {name: t.curve for name, t in rep.training.items() if "@seed" not in name and t.curve}
    fig = _img(learning_curves(curves), "learning curves") if curves else ""
    return f"<h2>Training effort and learning curves (validation patients)</h2>{table}{fig}"


def _two_sample(rep: ReportModel) -> str:
    """Per site: can a CNN tell the published images from the site's real patients, beside the real-vs-real floor."""
    rows = []
    for site, row in sorted(rep.privacy.items()):
        ts = (row.model_dump().get("two_sample") or {})
        if not ts:
            continue
        if "skipped" in ts:
            rows.append(f"<tr><td>{_e(site)}</td><td colspan='3' style='text-align:left'>skipped: {_e(ts['skipped'])}"
                        "</td></tr>")
            continue
        sv, rr = ts["synthetic_vs_real"], ts["real_vs_real"]
        rows.append(f"<tr><td>{_e(site)}</td><td>{sv['auc']:.2f} {_ci(*sv['ci95'])}</td>"
                    f"<td>{rr['auc']:.2f} {_ci(*rr['ci95'])}</td><td>{ts.get('real_patients', '–')}</td></tr>")
    if not rows:
        return ""
    head = ("<tr><th>site</th><th>synthetic vs real: AUC [95 % CI]</th><th>real vs real (floor)</th>"
            "<th>real patients</th></tr>")
    note = ('<p class="small">Held-out ROC AUC of a small CNN trained from scratch to tell each site\'s published '
            "images from its training and validation patients' slices (patients kept whole in the folds); 0.5 means "
            "it cannot tell. The floor is the same test between two halves of the site's real patients. Computed at "
            "the site, carried in its signed certificate.</p>")
    return f"<h2>Synthetic vs real (classifier two-sample test)</h2><table>{head}{''.join(rows)}</table>{note}"


def _generator(rep: ReportModel) -> str:
    """Per site: the generator's training effort and its samples' noise power against the real slices."""
    rows = []
    for site, row in sorted(rep.privacy.items()):
        g = row.model_dump().get("generator") or {}
        if not g:
            continue
        if g.get("noise_power_ratio"):
            bands = " / ".join(f"{r:.2f}" for r in g["noise_power_ratio"])
            verdict = ("within" if g["noise_within"] else "outside") + f" ±{100 * g['noise_tolerance']:.0f} %"
        else:
            bands, verdict = "not measured", _e(g.get("noise_skipped") or "")
        rows.append(f"<tr><td>{_e(site)}</td><td>{_e(g['kind'])}</td><td>{g['optimizer_steps']:,}</td>"
                    f"<td>{g['images_seen']:,}</td><td>{g['train_seconds']:.0f}</td><td>{_e(g['stopped'])}</td>"
                    f"<td>{bands}</td><td>{verdict}</td></tr>")
    if not rows:
        return ""
    head = ("<tr><th>site</th><th>generator</th><th>optimiser steps</th><th>images seen</th><th>training s</th>"
            "<th>stopped by</th><th>noise power, published / real, 4 bands (low → high)</th><th></th></tr>")
    note = ('<p class="small">Measured at each site and carried in its signed certificate: the noise power of the '
            "published images in flat in-body regions over that of the site's real training and validation slices, "
            "per radial "
            "frequency band (1.0: the scanner's own); the generator's optimiser steps and images seen, and whether "
            "its held-out loss on the validation patients or its maximum ended training (docs/generative.md).</p>")
    return f"<h2>Site generators</h2><table>{head}{''.join(rows)}</table>{note}"


def _memorisation(rep: ReportModel) -> str:
    """Per site and metric: membership inference, near-copy share of what was published, and of all candidates."""
    rows = []
    for site, row in sorted(rep.privacy.items()):
        d = row.model_dump()
        mem = ((d.get("memorisation") or {}).get("metrics") or {})
        flagged = d.get("candidates_flagged") or {}
        for m in sorted(set(mem) | set(flagged)):
            r = mem.get(m) or {}
            ci = r.get("membership_auc_ci95") or [None, None]
            auc = "–" if r.get("membership_auc") is None else f"{r['membership_auc']:.2f} {_ci(*ci)}"
            share = "–" if r.get("near_copy_share") is None else f"{100 * r['near_copy_share']:.1f} %"
            cand = "–" if flagged.get(m) is None else f"{100 * flagged[m]:.1f} %"
            rows.append(f"<tr><td>{_e(site)}</td><td>{_e(m)}</td><td>{auc}</td><td>{share}</td><td>{cand}</td></tr>")
    if not rows:
        return ""
    head = ("<tr><th>site</th><th>metric</th><th>membership AUC [95 % CI]</th><th>published nearer than 95 % of "
            "held-out slices</th><th>candidates the metric alone rejects</th></tr>")
    note = ('<p class="small">Membership inference: can an attacker holding the published images tell the site\'s '
            "training patients from its validation patients by how close each real slice is to its nearest published "
            "image (0.5: no signal; CI resamples patients). For <code>learned_copy</code> (the site's copy detector) "
            "the last column is the generator's \u201c% copies\u201d before the gate. Computed at the site, signed "
            "into its certificate.</p>")
    return f"<h2>Memorisation</h2><table>{head}{''.join(rows)}</table>{note}"


def _release_review(rep: ReportModel) -> str:
    """Per site: who released its bundle (or that a simulation released it without anyone looking)."""
    rows = []
    for site, row in sorted(rep.privacy.items()):
        r = row.model_dump().get("release_review")
        if not r:
            continue
        who = "nobody: released automatically (simulation)" if r.get("automatic") else _e(r.get("reviewer", ""))
        rows.append(f"<tr><td>{_e(site)}</td><td style='text-align:left'>{who}</td><td>{_e(r.get('decided', ''))}"
                    f"</td><td>{int(r.get('withheld', 0))}</td></tr>")
    if not rows:
        return ""
    return ("<h2>Release review at the sites</h2><table><tr><th>site</th><th>released by</th><th>when (UTC)</th>"
            f"<th>images withheld</th></tr>{''.join(rows)}</table>")


def _kv_table(data: Mapping[str, Any]) -> str:
    if not data:
        return "<p>–</p>"
    rows = "".join(
        f"<tr><td>{_e(k)}</td><td style='text-align:left'>"
        f"{_fmt(v) if not isinstance(v, (dict, list)) else '<code>' + _e(json.dumps(v)) + '</code>'}</td></tr>"
        for k, v in data.items()
    )
    return f"<table>{rows}</table>"


def _figures(figures_inputs: Mapping[str, Any] | None) -> str:
    if not figures_inputs:
        return ""
    parts = []
    examples = figures_inputs.get("examples")
    if examples:
        cols = {k: np.asarray(v) for k, v in examples.items()}
        parts.append("<h2>Examples (input / output / target)</h2>")
        parts.append(_img(crops_figure(cols, n=int(figures_inputs.get("n_examples", 3)),
                                       crop=figures_inputs.get("crop")), "example crops"))
    samples = figures_inputs.get("samples")
    if samples:
        parts.append("<h2>Sample grids (real vs synthetic)</h2>")
        parts.append(_img(sample_grid({k: np.asarray(v) for k, v in samples.items()}), "sample grid"))
    closest = figures_inputs.get("closest")
    if closest:
        rows: dict[str, np.ndarray] = {}
        caption = []
        for site, pair in closest.items():
            rows[f"{site} published"] = np.asarray(pair["published"])
            rows[f"{site} nearest real"] = np.asarray(pair["real"])
            caption.append(f"{_e(site)}: " + ", ".join(f"{d:.4f}" for d in pair["pixel_rmse"]))
        parts.append("<h2>Closest published / real pairs</h2>")
        parts.append(_img(sample_grid(rows, n=max(len(v) for v in rows.values())), "closest pairs"))
        parts.append('<p class="small">Per site, the published images nearest to a real training slice (pixel '
                     "RMSE, left to right: " + "; ".join(caption) + "), each above its nearest real slice. Shown "
                     "only in simulation: in deployment real slices never leave a site.</p>")
    return "".join(parts)


def render_html(
    report: str | Path | dict[str, Any] | ReportModel,
    out_html: str | Path,
    figures_inputs: Mapping[str, Any] | None = None,
) -> Path:
    """Render ``report`` (a report.json path, dict or model) to ``out_html``, atomically.

    ``figures_inputs`` (optional): ``examples`` = {column name: (N, H, W) array}
    (e.g. input/output/target), ``crop`` (centre crop edge), ``n_examples``,
    ``samples`` = {row name: (N, H, W) array} (e.g. real vs synthetic).
    """
    rep = load_report(report) if isinstance(report, (str, Path)) else validate_report(report)
    title = " · ".join(str(v) for v in (rep.scenario, rep.task, rep.network) if v) or "fedsynth report"
    wall = rep.wall_seconds if isinstance(rep.wall_seconds, dict) else {"total": rep.wall_seconds}
    privacy = {k: v.model_dump(exclude_none=True) for k, v in rep.privacy.items()}
    missing = rep.missing_sites if isinstance(rep.missing_sites, dict) else {s: "missing" for s in rep.missing_sites}
    notes = "".join(f"<li>{_e(n)}</li>" for n in rep.notes)
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{_e(title)}</h1>
<p class="small">PSNR and SSIM with data range 1 on the normalised [0, 1] scale (SSIM: MONAI, 11×11 Gaussian window,
σ 1.5); means with percentile-bootstrap 95% CIs. Comparisons are paired over the same test images:
a paired t-test and Wilcoxon signed-rank test for a difference, and TOST for equivalence within ±margin
(equivalent when p<sub>TOST</sub> &lt; 0.05). A large t-test p-value alone is not evidence of equivalence.
Verdicts count patients, not slices (slices of one patient are not independent); the per-slice comparisons
are description only.</p>
{_budget_warning(rep)}{_verdicts_table(rep)}
{_img(patient_plot(rep.per_patient), "per-patient PSNR, methods side by side") if rep.per_patient else ""}
<h2>Metrics</h2>{_methods_table(rep)}
{_bars(rep)}
{_training(rep)}
<h2>Paired comparisons per slice (descriptive; slices of one patient are not independent)</h2>{_comparisons_table(rep)}
{_figures(figures_inputs)}
{_two_sample(rep)}
{_generator(rep)}
{_memorisation(rep)}
{_release_review(rep)}
<h2>Privacy gate</h2>{_kv_table(privacy)}
<h2>Communication (bytes)</h2>{_kv_table(rep.communication_bytes)}
<h2>Wall time (s)</h2>{_kv_table(wall)}
<h2>Machine</h2>{_kv_table(rep.machine)}
<h2>Missing sites</h2>{_kv_table(missing)}
<h2>Notes</h2><ul>{notes or "<li>–</li>"}</ul>
</body></html>
"""
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out, body.encode("utf-8"))
    return out
