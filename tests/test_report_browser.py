"""report.html in a real browser (headless Chromium): the verdicts first, offline, printable.

Chromium comes from Debian (`apt-get install -y chromium`, done by `.ci/run`);
without it these tests are skipped with that reason.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fedsynth.report import add_verdicts, compare_by_patient, render_html, summarise, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)")

# every network name resolves nowhere: a page that needs anything remote shows it
_OFFLINE = ["--headless", "--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP * ~NOTFOUND",
            "--disable-background-networking"]


def _chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *_OFFLINE, *args], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    """A study-shaped report: three sites, three patients each, two methods, verdicts."""
    rng = np.random.default_rng(0)
    per: dict = {"synthetic-pool": {}, "fedavg": {}}
    patients = {}
    for site in ("site-1", "site-2", "site-3"):
        n = 18
        base = rng.normal(37, 1.0, n)
        per["fedavg"][site] = {"psnr": base, "ssim": np.clip(rng.normal(0.92, 0.01, n), 0, 1)}
        per["synthetic-pool"][site] = {"psnr": base + 2 + rng.normal(0, 0.3, n),
                                       "ssim": per["fedavg"][site]["ssim"] + 0.03}
        patients[site] = [i // 6 for i in range(n)]
    verdicts = add_verdicts([
        {"a": "synthetic-pool", "b": "fedavg",
         **compare_by_patient(per["synthetic-pool"], per["fedavg"], patients, m, margin)}
        for m, margin in (("psnr", 0.5), ("ssim", 0.01))])
    out = tmp_path_factory.mktemp("report")
    write_report(out, {"methods": summarise(per), "patient_comparisons": verdicts, "scenario": "browser",
                       "task": "ldct", "network": "rednet", "wall_seconds": {"total": 1.0}})
    x = np.clip(rng.random((4, 32, 32)), 0, 1).astype(np.float32)
    render_html(out / "report.json", out / "report.html", {"samples": {"synthetic site-1": x}})
    return out / "report.html"


def test_the_verdicts_come_first_and_render_offline(page: Path) -> None:
    res = _chromium("--dump-dom", page.as_uri())
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    dom = res.stdout.decode()
    headings = re.findall(r"<h2[^>]*>(.*?)</h2>", dom)
    assert headings and headings[0].startswith("Verdicts"), headings
    assert headings.index(next(h for h in headings if h.startswith("Metrics"))) > 0
    assert dom.count("superior") >= 2 and "9" in re.sub(r"<[^>]+>", " ", dom)
    assert not re.search(r"""(src|href)=["']https?://""", dom)  # nothing to fetch
    assert re.search(r"""<img[^>]+src=["']data:image/png;base64,""", dom)  # figures inline


def test_first_screen_screenshot_and_pdf(page: Path, tmp_path: Path) -> None:
    shot, pdf = tmp_path / "first-screen.png", tmp_path / "report.pdf"
    res = _chromium(f"--screenshot={shot}", "--window-size=1200,900", "--hide-scrollbars", page.as_uri())
    assert res.returncode == 0 and shot.is_file(), res.stderr.decode()[-2000:]
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert img.shape == (900, 1200) and img.std() > 10  # a page was drawn, not a blank or error screen
    res = _chromium(f"--print-to-pdf={pdf}", "--no-pdf-header-footer", page.as_uri())
    assert res.returncode == 0 and pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 10_000
