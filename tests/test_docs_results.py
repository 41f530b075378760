"""The numbers docs quote come from committed reports: each generated block is in sync with docs/results/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generator_fidelity_tables_match_the_committed_reports() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "render_docs.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
