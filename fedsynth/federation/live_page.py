"""The live study page: a read-only view of a study directory, served on loopback.

Why: a coordinator running a study across hospitals for hours has only the
log; the page shows, while it runs, which phase it is in and how long each
took, the sites and whether they are still in, what each published and at
which acceptance rate, the bytes each method moved, the learning curves as
validations come in, the certificates, and report.html at the end.

It reads only what the study already writes (``study.json``,
``coordinator/state.json``, the pool's manifest opened read-only,
``report.html``) and never writes: a page that can change nothing can be
left open by anyone who can reach the loopback port. Starlette routes,
uvicorn serves (both come with Flower); the page is one HTML document with
its CSS and script inline (no CDN, works offline) that asks ``/api/status``
every two seconds.

    >>> page = LivePage(Path("runs/default")); url = page.start()   # http://127.0.0.1:PORT/
    >>> ...; page.stop()
"""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from fedsynth.federation.study_dir import StudyLayout

__all__ = ["LivePage", "LoopbackServer", "build_app", "study_status"]

log = logging.getLogger(__name__)

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object written atomically by the study, or {} while it does not exist yet."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _manifest(layout: StudyLayout, sql: str, args: tuple = ()) -> list[tuple] | None:
    """Rows of one query on the pool's manifest, opened read-only; None while there is none (or it is busy)."""
    db_path = layout.pool / "manifest.sqlite"
    if not db_path.is_file():
        return None
    try:
        db = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return None


def _pool_counts(layout: StudyLayout) -> dict[str, int]:
    """Pooled images per site (nothing when there is no pool yet)."""
    rows = _manifest(layout, "SELECT i.site, COUNT(*) FROM images i JOIN bundles b ON b.id = i.bundle_id "
                             "WHERE b.verified = 1 GROUP BY i.site")
    return {str(site): int(n) for site, n in rows or ()}


def _curves(training: dict[str, Any]) -> dict[str, list[dict[str, float]]]:
    """Per trained model, its validation curve: steps, bytes and validation PSNR at each validation."""
    out = {}
    for name, t in sorted(training.items()):
        points = [{"steps": float(p.get("steps", 0)), "bytes": float(p.get("bytes", 0) or 0),
                   "val_psnr": float(p["val_psnr"])}
                  for p in t.get("curve", []) if isinstance(p, dict) and p.get("val_psnr") is not None]
        if points:
            out[name] = points
    return out


def _request(layout: StudyLayout, now: float) -> dict[str, Any] | None:
    """The coordinator's current (or last) request: its method, message type, and each site's state and wait."""
    req = _read_json(layout.progress)
    if not req.get("sites"):
        return None
    since = float(req.get("since", now))
    waited = float(req.get("until", now)) - since
    return {"method": req.get("method", ""), "message": req.get("message", ""), "open": "until" not in req,
            "seconds": max(0.0, waited), "sites": dict(req["sites"])}


def study_status(out: Path, now: float | None = None) -> dict[str, Any]:
    """What the page shows, from the study directory as it is now (a JSON-ready dict).

    A directory of re-splits (``split-<k>/``, :mod:`fedsynth.federation.splits`)
    shows the latest split that has started, and says which.
    """
    layout = StudyLayout(Path(out))
    split = None
    if not layout.spec.is_file():
        started_splits = sorted((p for p in layout.out.glob("split-*") if (p / "study.json").is_file()),
                                key=lambda p: int(p.name.split("-")[1]) if p.name.split("-")[1].isdigit() else -1)
        if started_splits:
            layout, split = StudyLayout(started_splits[-1]), started_splits[-1].name
    now = time.time() if now is None else now
    spec = _read_json(layout.spec)
    scenario = spec.get("scenario", {}) if isinstance(spec.get("scenario"), dict) else {}
    state = _read_json(layout.state)
    done, walls, started = state.get("done", []), state.get("wall_seconds", {}), state.get("started", {})
    report_ready = layout.report_html.is_file()
    phases = []
    for name in state.get("planned", []):
        finished = name in done or (name == "setup" and "setup" in walls) or (name == "report" and report_ready)
        if finished:
            phases.append({"name": name, "state": "done", "seconds": walls.get(name)})
        elif name in started and not any(p["state"] == "running" for p in phases):
            phases.append({"name": name, "state": "running", "seconds": max(0.0, now - float(started[name]))})
        else:
            phases.append({"name": name, "state": "waiting", "seconds": None})
    pool = _pool_counts(layout)
    privacy = state.get("privacy", {})
    missing = state.get("missing", {})
    names = sorted(set(state.get("generators", {})) | set(privacy) | set(missing) | set(pool)
                   | set(state.get("test_patients", {})))
    sites = []
    for sid in names:
        row = privacy.get(sid, {}) if isinstance(privacy.get(sid), dict) else {}
        sites.append({
            "site": sid,
            "state": f"left the study: {missing[sid]}" if sid in missing else "in the study",
            "generator": (state.get("generators", {}).get(sid) or "").removeprefix("sha256:")[:12],
            "pooled": pool.get(sid, 0),
            "acceptance_rate": row.get("acceptance_rate"),
            "status": state.get("rejected_bundles", {}).get(sid) or row.get("status"),
            "certificate": f"certificates/{sid}" if pool.get(sid) else None,
        })
    started_at = min((float(v) for v in started.values()), default=None)
    finished = report_ready and "report" in walls
    if finished:
        elapsed = float(sum(walls.values()))
    else:
        elapsed = None if started_at is None else max(0.0, now - started_at)
    return {
        "study": scenario.get("name", layout.out.name),
        "description": scenario.get("description", ""),
        "mode": spec.get("mode", "") + (f" ({split})" if split else ""),
        "expected_sites": spec.get("expected_sites") or (scenario.get("cohort") or {}).get("sites"),
        "elapsed_s": elapsed,
        "finished": finished,
        "phases": phases,
        "sites": sites,
        "bytes": {m: {"sent": int(v.get("sent", 0)), "received": int(v.get("received", 0))}
                  for m, v in sorted(state.get("bytes", {}).items()) if isinstance(v, dict)},
        "curves": _curves(state.get("training", {})),
        "request": _request(layout, now),
        "report": "report.html" if report_ready else None,
        "machine": state.get("machine", {}),
    }


def _certificate(layout: StudyLayout, site: str) -> dict[str, Any] | None:
    """The signed certificate of ``site``'s latest verified bundle, or None."""
    rows = _manifest(layout, "SELECT certificate FROM bundles WHERE site = ? AND verified = 1 "
                             "ORDER BY received DESC LIMIT 1", (site,))
    return json.loads(rows[0][0]) if rows else None


def build_app(out: Path) -> Any:
    """The Starlette app of the page for study directory ``out`` (GET only)."""
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse
    from starlette.routing import Route

    layout = StudyLayout(Path(out))

    async def index(request: Any) -> HTMLResponse:
        return HTMLResponse(_PAGE, headers={"Cache-Control": "no-store"})

    async def status(request: Any) -> JSONResponse:
        return JSONResponse(study_status(layout.out), headers={"Cache-Control": "no-store"})

    async def certificate(request: Any) -> Any:
        cert = _certificate(layout, str(request.path_params["site"]))
        if cert is None:
            return PlainTextResponse("no verified certificate for this site", status_code=404)
        return JSONResponse(cert)

    async def report(request: Any) -> Any:
        if not layout.report_html.is_file():
            return PlainTextResponse("report.html is written when the study ends", status_code=404)
        return FileResponse(layout.report_html, media_type="text/html")

    return Starlette(routes=[
        Route("/", index), Route("/api/status", status), Route("/certificates/{site}", certificate),
        Route("/report.html", report),
    ])


class LoopbackServer:
    """A Starlette app served by uvicorn in a background thread, on loopback unless the operator names a host.

    Shared by the live study page and the site's release review page.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, name: str = "page") -> None:
        self.app, self.host, self.port, self.name = app, host, int(port), name
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        """Bind (``port`` 0: a free one), serve in the background, and return the base URL."""
        import uvicorn

        if self.host not in _LOOPBACK:
            log.warning("%s: listening on %s, reachable beyond this machine (asked for)", self.name, self.host)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True,
                                        name=f"fedsynth-{self.name}")
        self._thread.start()
        deadline = time.time() + 10
        while not self._server.started and self._thread.is_alive() and time.time() < deadline:
            time.sleep(0.02)
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def stop(self) -> None:
        """Stop serving (waits for the server thread)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


class LivePage(LoopbackServer):
    """The live page of one study directory (see the module docstring)."""

    def __init__(self, out: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.out = Path(out)
        super().__init__(build_app(self.out), host, port, name="live page")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fedsynth study</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:1100px}
h1{font-size:1.4em;margin:0 0 .2em} h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse} td,th{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:left}
th{background:#f4f4f4} .done{color:#1a7f37} .running{color:#9a6700;font-weight:600} .waiting{color:#888}
.left{color:#b42318} .muted{color:#666} svg{background:#fafafa;border:1px solid #ddd}
.num{text-align:right;font-variant-numeric:tabular-nums}
</style></head><body>
<h1 id="title">fedsynth study</h1><div id="summary" class="muted">loading…</div><div id="request"></div>
<h2>Phases</h2><table id="phases"><tr><th>phase</th><th>state</th><th class="num">seconds</th></tr></table>
<h2>Sites</h2><table id="sites"><tr><th>site</th><th>state</th><th>generator</th><th class="num">pooled</th>
<th class="num">acceptance</th><th>certificate</th></tr></table>
<h2>Bytes per method</h2><table id="bytes"><tr><th>method</th><th class="num">sent</th>
<th class="num">received</th></tr></table>
<h2>Learning curves (validation PSNR vs optimiser steps)</h2><div id="curves" class="muted">none yet</div>
<h2>Report</h2><div id="report" class="muted">written when the study ends</div>
<script>
"use strict";
const esc = s => String(s ?? "").replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c]));
const secs = s => s == null ? "" : (s >= 90 ? Math.floor(s / 60) + " min " + Math.round(s % 60) + " s" : s.toFixed(1) + " s");
function rows(id, header, items) {
  document.getElementById(id).innerHTML = header + items.join("");
}
const COLORS = ["#1f77b4","#d62728","#2ca02c","#9467bd","#ff7f0e","#8c564b","#e377c2","#17becf","#7f7f7f","#bcbd22"];
function curves(data) {
  const names = Object.keys(data);
  if (!names.length) return '<span class="muted">none yet</span>';
  const pts = names.flatMap(n => data[n]);
  const x0 = 0, x1 = Math.max(...pts.map(p => p.steps), 1);
  const y0 = Math.min(...pts.map(p => p.val_psnr)), y1 = Math.max(...pts.map(p => p.val_psnr));
  const W = 720, H = 300, L = 50, B = 30, sx = v => L + (W - L - 10) * (v - x0) / (x1 - x0 || 1),
        sy = v => H - B - (H - B - 10) * (v - y0) / ((y1 - y0) || 1);
  let svg = `<svg width="${W}" height="${H}" role="img" aria-label="learning curves">`;
  svg += `<text x="${L}" y="${H - 8}" font-size="11">0</text><text x="${W - 60}" y="${H - 8}" font-size="11">${x1} steps</text>`;
  svg += `<text x="4" y="${sy(y1) + 4}" font-size="11">${y1.toFixed(1)} dB</text><text x="4" y="${sy(y0)}" font-size="11">${y0.toFixed(1)}</text>`;
  let legend = "";
  names.forEach((n, i) => {
    const c = COLORS[i % COLORS.length];
    svg += `<polyline fill="none" stroke="${c}" stroke-width="1.5" points="${data[n].map(p => sx(p.steps) + "," + sy(p.val_psnr)).join(" ")}"/>`;
    legend += `<span style="color:${c}">■</span> ${esc(n)} &nbsp; `;
  });
  return svg + "</svg><div>" + legend + "</div>";
}
async function refresh() {
  let s;
  try { s = await (await fetch("api/status", {cache: "no-store"})).json(); }
  catch (e) { document.getElementById("summary").textContent = "the study's page is not answering"; return; }
  document.title = "fedsynth study " + s.study;
  document.getElementById("title").textContent = "fedsynth study: " + s.study;
  const running = s.phases.find(p => p.state === "running");
  document.getElementById("summary").textContent = [s.description, s.mode,
    s.expected_sites ? s.expected_sites + " sites expected" : "",
    s.finished ? "finished" : (running ? "running: " + running.name : "starting"),
    s.elapsed_s != null ? "elapsed " + secs(s.elapsed_s) : ""].filter(Boolean).join(" · ");
  const r = s.request;
  document.getElementById("request").innerHTML = !r || s.finished ? "" :
    `${r.open ? "waiting on" : "last request"}: <code>${esc(r.method)} ${esc(r.message)}</code> — ` +
    Object.entries(r.sites).map(([k, v]) => `${esc(k)} <span class="${v === "replied" ? "done" : v === "working" ? "running" : "left"}">${esc(v)}</span>`).join(", ") +
    ` (${secs(r.seconds)})`;
  rows("phases", "<tr><th>phase</th><th>state</th><th class=num>seconds</th></tr>", s.phases.map(p =>
    `<tr><td>${esc(p.name)}</td><td class="${p.state}">${p.state}</td><td class=num>${secs(p.seconds)}</td></tr>`));
  rows("sites", "<tr><th>site</th><th>state</th><th>generator</th><th class=num>pooled</th><th class=num>acceptance</th><th>certificate</th></tr>",
    s.sites.map(x => `<tr><td>${esc(x.site)}</td><td class="${x.state.startsWith("left") ? "left" : ""}">${esc(x.state)}${x.status ? " (" + esc(x.status) + ")" : ""}</td>` +
      `<td><code>${esc(x.generator)}</code></td><td class=num>${x.pooled}</td>` +
      `<td class=num>${x.acceptance_rate == null ? "" : (100 * x.acceptance_rate).toFixed(1) + " %"}</td>` +
      `<td>${x.certificate ? `<a href="${esc(x.certificate)}">certificate</a>` : ""}</td></tr>`));
  rows("bytes", "<tr><th>method</th><th class=num>sent</th><th class=num>received</th></tr>",
    Object.entries(s.bytes).map(([m, b]) => `<tr><td>${esc(m)}</td><td class=num>${b.sent.toLocaleString("en")}</td><td class=num>${b.received.toLocaleString("en")}</td></tr>`));
  document.getElementById("curves").innerHTML = curves(s.curves);
  document.getElementById("report").innerHTML = s.report ? `<a href="${esc(s.report)}">report.html</a>` : "written when the study ends";
}
refresh(); setInterval(refresh, 2000);
</script></body></html>
"""
