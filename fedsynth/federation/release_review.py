"""The site's release review: a person at the hospital approves what leaves, image by image, before it is signed.

Why: the gate's promise is a distance, checked by code; the people
accountable for a hospital's data also want to look. With ``[privacy]
review = true`` in the site TOML, a publish request runs the gate as usual,
but instead of signing and sending, the site writes the gate's accepted
images to ``<workdir>/review/<key>/`` (with their companions, the unsigned
certificate, and the nearest real training slice per metric) and answers
"pending". ``fedsynth site-review --config SITE.toml`` serves, on the
site's own loopback, a page showing each candidate beside its nearest real
slices and distances, with release / withhold per image and "reject the
whole bundle". The decision is final, written atomically beside the
candidates, and appended to the site's review audit log
(``<workdir>/review/audit.jsonl``: when, who, which study and request, what
was released and withheld). On its next request the coordinator (which
keeps asking until its timeout, :mod:`fedsynth.federation.phases.publish`)
gets only the released images, signed, with the review in the certificate
(:class:`fedsynth.privacy.ReleaseReview`). A rejected bundle is a privacy
outcome, like a gate that accepts nothing. In a simulation nobody reviews:
the bundle is released automatically and the certificate (and report) say so.

The page is served by the review command, not by the site daemon, so a
review can take hours without holding a Flower message open, and the real
slices it shows never leave the site's machine. Each pending review has a
random token that the page's decision must carry, and only JSON posts are
accepted (a form on another site cannot post one without a CORS preflight,
which this server never answers).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsynth.errors import FedsynthError
from fedsynth.io_utils import atomic_dir, write_json_atomic
from fedsynth.privacy.certificate import timestamp

__all__ = ["Decision", "ReviewPending", "build_review_app", "decide", "open_review", "pending_reviews",
           "read_decision", "read_meta", "review_dir"]

log = logging.getLogger(__name__)

AUDIT_LOG = "audit.jsonl"


class ReviewPending(FedsynthError):
    """The bundle waits for the site's reviewer; the coordinator is told "pending" and asks again."""


@dataclass(frozen=True)
class Decision:
    """A reviewer's final decision on one bundle."""

    reviewer: str
    decided: str
    released: list[str]
    rejected: bool


def _root(workdir: Path) -> Path:
    return Path(workdir) / "review"


def review_dir(workdir: Path, study_id: str, nonce: str) -> Path:
    """Where the review of one publish request lives (named by a hash: ids never become paths)."""
    return _root(workdir) / hashlib.sha256(f"{study_id}\0{nonce}".encode()).hexdigest()[:20]


def open_review(path: Path, *, study_id: str, nonce: str, images: np.ndarray, companions: np.ndarray | None,
                certificate_json: str, nearest: list[dict[str, Any]], stats: dict[str, Any]) -> None:
    """Write a pending review: the gate's accepted images and what the page shows beside them (one atomic dir)."""
    with atomic_dir(path) as tmp:
        np.save(tmp / "candidates.npy", np.ascontiguousarray(images, dtype=np.float32), allow_pickle=False)
        if companions is not None:
            np.save(tmp / "companions.npy", np.ascontiguousarray(companions, dtype=np.float32), allow_pickle=False)
        (tmp / "certificate.json").write_text(certificate_json, encoding="utf-8")
        write_json_atomic(tmp / "nearest.json", nearest)
        write_json_atomic(tmp / "meta.json", {
            "study_id": study_id, "nonce": nonce, "opened": timestamp(), "token": secrets.token_urlsafe(24),
            "stats": stats})


def read_meta(path: Path) -> dict[str, Any]:
    """The review's request, opening time, token and the gate's stats (``meta.json``)."""
    return json.loads((path / "meta.json").read_text(encoding="utf-8"))


def read_decision(path: Path) -> Decision | None:
    """The decision on the review at ``path``, or None while it is pending."""
    try:
        data = json.loads((path / "decision.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return Decision(str(data["reviewer"]), str(data["decided"]), [str(d) for d in data["released"]],
                    bool(data["rejected"]))


def pending_reviews(workdir: Path) -> list[Path]:
    """Reviews still waiting for a decision, oldest first."""
    root = _root(workdir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if (p / "meta.json").is_file() and not (p / "decision.json").exists()]
    return sorted(found, key=lambda p: read_meta(p)["opened"])


def decide(path: Path, *, token: str, reviewer: str, released: list[str], reject: bool) -> Decision:
    """Record the reviewer's final decision on the review at ``path`` and log it; ValueError if it cannot stand.

    ``released``: digests of the images to publish (a subset of the
    candidates); ``reject``: withhold the whole bundle.
    """
    from fedsynth.digests import array_digest

    meta = read_meta(path)
    if not secrets.compare_digest(str(token), str(meta["token"])):
        raise ValueError("this page is out of date or not the site's (wrong review token); reload it")
    if (path / "decision.json").exists():
        raise ValueError("this bundle was decided already; decisions are final")
    reviewer = " ".join(str(reviewer).split())
    if not reviewer or len(reviewer) > 200:
        raise ValueError("name the reviewer (1 to 200 characters)")
    candidates = [array_digest(x) for x in np.load(path / "candidates.npy")]
    unknown = set(released) - set(candidates)
    if unknown:
        raise ValueError(f"{len(unknown)} released image(s) are not candidates of this bundle")
    if not reject and not released:
        raise ValueError("release at least one image, or reject the whole bundle")
    keep = [] if reject else [d for d in candidates if d in set(released)]
    decision = Decision(reviewer, timestamp(), keep, bool(reject))
    tmp = path / f".decision-{secrets.token_hex(4)}.json"
    tmp.write_text(json.dumps(decision.__dict__), encoding="utf-8")
    try:
        os.link(tmp, path / "decision.json")  # atomic, and fails if another decision got there first
    except FileExistsError:
        raise ValueError("this bundle was decided already; decisions are final") from None
    finally:
        tmp.unlink()
    entry = {"time": decision.decided, "reviewer": reviewer, "study_id": meta["study_id"], "nonce": meta["nonce"],
             "decision": "rejected" if reject else "released", "n_candidates": len(candidates),
             "released": keep, "withheld": [d for d in candidates if d not in set(keep)]}
    with open(path.parent / AUDIT_LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")
    log.info("release review %s: %s by %s (%d of %d released)", path.name, entry["decision"], reviewer, len(keep),
             len(candidates))
    return decision


def _png(img: np.ndarray, scale: int = 2) -> str:
    from PIL import Image

    arr = (np.clip(img, 0.0, 1.0) * 255).round().astype(np.uint8)
    pic = Image.fromarray(arr).resize((arr.shape[1] * scale, arr.shape[0] * scale), Image.NEAREST)
    buf = io.BytesIO()
    pic.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _review_html(path: Path, train: np.ndarray) -> str:
    """One pending review as an HTML section: each candidate beside its nearest real slices, with a checkbox."""
    from html import escape

    from fedsynth.digests import array_digest

    meta = read_meta(path)
    cert = json.loads((path / "certificate.json").read_text(encoding="utf-8"))
    thresholds = {m: v["threshold"] for m, v in cert["metrics"].items()}
    nearest = json.loads((path / "nearest.json").read_text(encoding="utf-8"))
    images = np.load(path / "candidates.npy")
    metrics = sorted(thresholds)
    rows = []
    for i, (img, near) in enumerate(zip(images, nearest, strict=True)):
        digest = array_digest(img)
        cells = [f'<td><img alt="candidate {i}" src="{_png(img)}"></td>']
        for m in metrics:
            ref = near[m]
            ok = "" if ref["distance"] >= thresholds[m] else ' class="close"'
            cells.append(f'<td><img alt="nearest real slice by {escape(m)}" src="{_png(train[ref["reference_index"]])}">'
                         f'<div{ok}>{escape(m)} {ref["distance"]:.4g} (threshold {thresholds[m]:.4g})</div></td>')
        cells.append(f'<td><label><input type="checkbox" class="release" value="{digest}" checked> release</label></td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = "".join(f"<th>nearest real slice ({escape(m)})</th>" for m in metrics)
    return (f'<section data-review="{escape(path.name)}" data-token="{escape(meta["token"])}">'
            f'<h2>Study {escape(str(meta["study_id"]))[:40]} · request {escape(str(meta["nonce"]))[:12]}… · '
            f'{len(images)} images certified by the gate · opened {escape(meta["opened"])}</h2>'
            f"<table><tr><th>candidate</th>{head}<th>decision</th></tr>{''.join(rows)}</table>"
            '<p><label>Reviewer <input class="reviewer" size="30" placeholder="your name"></label> '
            '<button class="go">Release the checked images</button> '
            '<button class="reject">Reject the whole bundle</button> <span class="result"></span></p></section>')


def build_review_app(runtime: Any) -> Any:
    """The review page of one site (a :class:`~fedsynth.federation.site_session.SiteRuntime`)."""
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Route

    workdir = runtime.workdir
    cache: dict[str, np.ndarray] = {}

    def train() -> np.ndarray:
        if "train" not in cache:
            from fedsynth.data import ingest_configured_site

            cache["train"] = ingest_configured_site(runtime.config).train_images()
        return cache["train"]

    async def index(request: Any) -> HTMLResponse:
        pending = pending_reviews(workdir)
        body = "".join(_review_html(p, train()) for p in pending) or "<p>Nothing waits for review.</p>"
        return HTMLResponse(_PAGE.replace("{site}", runtime.site_id).replace("{body}", body),
                            headers={"Cache-Control": "no-store"})

    async def post(request: Any) -> JSONResponse:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return JSONResponse({"ok": False, "message": "JSON only"}, status_code=415)
        try:
            data = await request.json()
            name = str(data["review"])
            path = _root(workdir) / name
            if not name.isalnum() or not (path / "meta.json").is_file():
                raise ValueError("no such review")
            d = decide(path, token=str(data["token"]), reviewer=str(data["reviewer"]),
                       released=[str(x) for x in data.get("release", [])], reject=bool(data.get("reject")))
        except (ValueError, KeyError, TypeError) as err:
            return JSONResponse({"ok": False, "message": str(err)}, status_code=400)
        what = "rejected the whole bundle" if d.rejected else f"released {len(d.released)} image(s)"
        return JSONResponse({"ok": True, "message": f"{d.reviewer} {what}; the coordinator gets it on its next request"})

    return Starlette(routes=[Route("/", index), Route("/decide", post, methods=["POST"])])


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fedsynth release review: {site}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222} h1{font-size:1.4em} h2{font-size:1.05em}
table{border-collapse:collapse} td,th{padding:.3em .6em;border-bottom:1px solid #ddd;vertical-align:top;text-align:left}
img{image-rendering:pixelated;display:block} .close{color:#b42318;font-weight:600} .result{font-weight:600}
</style></head><body>
<h1>Release review at {site}</h1>
<p>Each image below cleared the privacy gate. Beside it: the nearest real training slice by each metric and its
distance. Uncheck an image to withhold it; only released images are signed and sent.</p>
{body}
<script>
"use strict";
for (const sec of document.querySelectorAll("section[data-review]")) {
  const send = async reject => {
    const release = [...sec.querySelectorAll("input.release:checked")].map(c => c.value);
    const res = await fetch("decide", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({review: sec.dataset.review, token: sec.dataset.token, release, reject,
                            reviewer: sec.querySelector("input.reviewer").value})});
    const out = await res.json();
    sec.querySelector(".result").textContent = out.message;
    if (out.ok) sec.querySelectorAll("button, input").forEach(e => e.disabled = true);
  };
  sec.querySelector("button.go").onclick = () => send(false);
  sec.querySelector("button.reject").onclick = () => send(true);
}
</script></body></html>
"""
