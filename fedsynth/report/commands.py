"""``fedsynth report DIR``: render DIR/report.json as a self-contained DIR/report.html."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="render DIR/report.json as a self-contained DIR/report.html",
        description="Validate DIR/report.json and write DIR/report.html (figures embedded, opens offline). "
        "Example crops come from DIR/examples.npz (arrays input/output/target) and sample grids from "
        "DIR/samples.npz (one array per row, e.g. real and synthetic) when present.",
    )
    p.add_argument("dir", type=Path, metavar="DIR", help="directory holding report.json")
    p.add_argument("--out", type=Path, metavar="HTML", help="output file (default DIR/report.html)")
    p.add_argument("--crop", type=int, metavar="PX", help="centre-crop example images to PX x PX")
    p.set_defaults(func=_report)


def _load_npz(path: Path) -> dict | None:
    import numpy as np

    from fedsynth.errors import DataError

    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable .npz ({err})") from None


def _report(args: argparse.Namespace) -> int:
    from fedsynth.report import render_html

    figs: dict = {}
    examples = _load_npz(args.dir / "examples.npz")
    if examples:
        figs["examples"] = examples
    samples = _load_npz(args.dir / "samples.npz")
    if samples:
        figs["samples"] = samples
    if args.crop:
        figs["crop"] = args.crop
    out = render_html(args.dir / "report.json", args.out or args.dir / "report.html", figures_inputs=figs or None)
    print(f"report: {out}")
    return 0
