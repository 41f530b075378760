"""The terminal's live view of a running study: the phases, the sites' answers to the current request, time left.

Why: a study runs for minutes to hours, and its log is other people's
lines; on a terminal, ``fedsynth simulate`` draws one view instead, from
the same files the live page reads (:func:`fedsynth.federation.live_page.study_status`),
redrawn every second with rich. Off a terminal (CI, pipes) nothing is drawn
and the study's one line per phase is logged instead.

Time left is estimated only from what this run has measured: every phase
still to come is expected to take as long as the finished phases of its
kind took (the downstream methods are one kind: each trains the same
network under the same budget and seeds). Until one phase of a kind that is
still to come has finished, the view says it is estimating rather than
guess. Phases that take seconds (publish, evaluation, report) count as
nothing until measured, so the estimate is a lower bound then ("at least").

    >>> with LiveView(Path("runs/default")):
    ...     run_simulated_study(...)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fedsynth.federation.names import Method, Phase

__all__ = ["LiveView", "PhaseLines", "estimate_remaining", "phase_kind", "render"]

_METHODS = {m.value for m in Method}  # the phases that train a downstream method (local-only included)
_SMALL = {Phase.SETUP.value, Phase.PUBLISH.value, Phase.EVALUATION.value, Phase.REPORT.value}


def phase_kind(name: str) -> str:
    """Which finished phases predict ``name``'s duration: every downstream method is one kind."""
    return "method" if name in _METHODS else name


def estimate_remaining(phases: list[dict[str, Any]]) -> tuple[float | None, bool]:
    """``(seconds left, exact)`` from the finished phases; ``(None, False)`` while a coming kind is unmeasured.

    ``exact`` is False when a short phase (publish, evaluation, report)
    still to come was counted as nothing because none of its kind finished.
    """
    measured: dict[str, list[float]] = {}
    for p in phases:
        if p["state"] == "done" and p.get("seconds") is not None:
            measured.setdefault(phase_kind(p["name"]), []).append(float(p["seconds"]))
    left, exact = 0.0, True
    for p in phases:
        if p["state"] == "done":
            continue
        times = measured.get(phase_kind(p["name"]))
        if not times:
            if p["name"] in _SMALL:
                exact = False
                continue
            return None, False
        expected = sum(times) / len(times)
        left += max(0.0, expected - float(p.get("seconds") or 0.0)) if p["state"] == "running" else expected
    return left, exact


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds >= 90:
        return f"{int(seconds // 60)} min {int(round(seconds % 60)):02d} s"
    return f"{seconds:.1f} s"


_MARK = {"done": ("✓", "green"), "running": ("▶", "bold yellow"), "waiting": ("·", "dim")}
_SITE = {"working": ("…", "yellow"), "replied": ("✓", "green"), "error": ("✗", "red"), "no reply": ("✗", "red")}


def render(status: dict[str, Any]) -> Any:
    """The view of one :func:`~fedsynth.federation.live_page.study_status` as a rich renderable."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    phases = status.get("phases", [])
    running = next((p for p in phases if p["state"] == "running"), None)
    head = Text(f"fedsynth study {status.get('study', '')}", style="bold")
    if status.get("mode"):
        head.append(f" · {status['mode']}")
    if status.get("finished"):
        head.append(" · finished", style="green")
    elif running is not None:
        head.append(f" · running: {running['name']}")
    if status.get("elapsed_s") is not None:
        head.append(f" · elapsed {_duration(status['elapsed_s'])}")
    if not status.get("finished") and phases:
        left, exact = estimate_remaining(phases)
        head.append(" · time left: estimating" if left is None else
                    f" · {'' if exact else 'at least '}{_duration(left)} left")
    table = Table(show_header=False, box=None, padding=(0, 1))
    request = status.get("request") or {}
    for p in phases:
        mark, style = _MARK[p["state"]]
        detail = Text()
        if p["state"] == "running" and request.get("sites"):
            detail.append(f"{request.get('message', '')}: ", style="dim")
            for site, state in sorted(request["sites"].items()):
                sign, colour = _SITE.get(state, ("?", "dim"))
                detail.append(f"{site} {sign}  ", style=colour)
            if request.get("open"):
                detail.append(f"waiting {_duration(request.get('seconds'))}", style="dim")
        table.add_row(Text(mark, style=style), Text(p["name"], style=style if p["state"] != "done" else ""),
                      Text(_duration(p.get("seconds")), justify="right"), detail)
    left_sites = [s["site"] for s in status.get("sites", []) if s["state"].startswith("left")]
    parts: list[Any] = [head, table]
    if left_sites:
        parts.append(Text("left the study: " + ", ".join(left_sites), style="red"))
    return Group(*parts)


class LiveView:
    """Draws :func:`render` of a study directory on the terminal (stderr), once a second, while in a ``with``."""

    def __init__(self, out: Path, refresh_s: float = 1.0) -> None:
        from rich.console import Console

        self.out = Path(out)
        self.console = Console(stderr=True)
        self._refresh_s = refresh_s
        self._live: Any = None
        self.finished = False  # the last drawn status had the report written

    def _view(self) -> Any:
        from fedsynth.federation.live_page import study_status

        status = study_status(self.out, now=time.time())
        self.finished = bool(status.get("finished"))
        return render(status)

    def __enter__(self) -> LiveView:
        from rich.live import Live

        self._live = Live(get_renderable=self._view, console=self.console, refresh_per_second=1 / self._refresh_s,
                          transient=False, redirect_stdout=True, redirect_stderr=True)
        self._live.start(refresh=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.refresh()
            self._live.stop()


class PhaseLines:
    """Off a terminal: one line per phase start and end, read from the study directory every ``poll_s``.

    The coordinator runs in Flower's simulation process, so its own log
    lines reach only the log file; this prints what a CI log or a pipe needs.
    """

    def __init__(self, out: Path, poll_s: float = 2.0, stream: Any = None) -> None:
        import sys
        import threading

        self.out, self.poll_s = Path(out), poll_s
        self.stream = stream or sys.stderr
        self._seen: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="fedsynth-phase-lines")

    def _emit(self) -> None:
        from fedsynth.federation.live_page import study_status

        status = study_status(self.out)
        split = status.get("mode", "").partition("(")[2].rstrip(")")  # "split-1" in a study of re-splits
        prefix = f"{split} " if split else ""
        for p in status.get("phases", []):
            key = f"{split}/{p['name']}"
            if self._seen.get(key) == p["state"] or p["state"] == "waiting":
                continue
            if p["state"] == "running":
                print(f"{prefix}phase {p['name']}: running", file=self.stream, flush=True)
            elif p["state"] == "done":
                print(f"{prefix}phase {p['name']}: done in {_duration(p.get('seconds'))}", file=self.stream,
                      flush=True)
            self._seen[key] = p["state"]

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._emit()

    def __enter__(self) -> PhaseLines:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._emit()
