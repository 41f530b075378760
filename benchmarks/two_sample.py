"""What the classifier two-sample test sees, beside the pixel statistics it replaces as the headline.

Real side: CT slices of 7 patients of one scanner of the bundled cohort's
generator (16 slices each, 64x64, the default study's size), patients kept
whole in the folds.
Other side: slices of 7 *other* patients, as they are (the real-vs-real
reference) or degraded the ways a weak generator fails — blurred (soft
anatomy), blurred then re-noised with white noise (texture laid over
softness), intensity-shifted — and two stand-ins for no generator at all
(per-pixel Gaussian noise with the real mean and SD; the blurred mean slice).
Each row: the two-sample AUC (mean over 3 folds, 95 % CI over folds), the
real-vs-real floor computed in the same run, and the two older numbers of
``fedsynth site evaluate`` for the same sets: the histogram Wasserstein-1
distance and the fine-texture RMS (real: see the first row).

    python benchmarks/two_sample.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gate import _ct_slices  # noqa: E402 - the cohort's CT slices, as the gate benchmark uses them

from fedsynth.generative.quality import fine_texture, histogram_distance  # noqa: E402
from fedsynth.generative.two_sample import real_vs_real_auc, two_sample_auc  # noqa: E402


def main() -> None:
    # one site: the gate benchmark's generator deals patients to 3 scanners in turn; keep every third patient
    # (one scanner, 14 patients x 32 slices), then every second slice
    x = _ct_slices(32 * 42, 64, seed=0).reshape(42, 32, 64, 64)[::3].reshape(-1, 64, 64)
    g = np.repeat([f"p{p:02d}" for p in range(14)], 32)
    real, rg = x[: 7 * 32 : 2], g[: 7 * 32 : 2]
    other = x[7 * 32 :: 2]
    rng = np.random.default_rng(1)
    soft = gaussian_filter(other, sigma=(0, 1.0, 1.0))
    mean, sd = real.mean(0), real.std(0)
    sets = {
        "other real patients": other,
        "blurred, sigma 0.6 px": gaussian_filter(other, sigma=(0, 0.6, 0.6)),
        "blurred, sigma 1 px": soft,
        "blurred 1 px + white noise 0.02": np.clip(soft + rng.normal(0, 0.02, soft.shape), 0, 1),
        "intensity +0.03": np.clip(other + 0.03, 0, 1),
        "per-pixel Gaussian noise (no generator)": np.clip(mean + sd * rng.standard_normal(other.shape), 0, 1),
        "blurred mean slice (no generator)": np.repeat(gaussian_filter(mean, 2.0)[None], len(other), 0),
    }
    t0 = time.perf_counter()
    floor = real_vs_real_auc(real, rg, seed=0)
    print(f"real side: {len(real)} slices of {len(np.unique(rg))} patients, 64x64; other side: {len(other)} slices\n")
    print("| other side | two-sample AUC [95 % CI over folds] | histogram W1 | fine texture (real "
          f"{fine_texture(real):.4f}) | s |")
    print("| --- | --- | ---: | ---: | ---: |")
    print(f"| real vs real: two halves of the real patients (the floor) | {floor['auc']:.2f} "
          f"[{floor['ci95'][0]:.2f}, {floor['ci95'][1]:.2f}] | | | {time.perf_counter() - t0:.1f} |", flush=True)
    for name, b in sets.items():
        t0 = time.perf_counter()
        r = two_sample_auc(real, b.astype(np.float32), a_groups=rg, seed=0)
        print(f"| {name} | {r['auc']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] | "
              f"{histogram_distance(b, real):.4f} | {fine_texture(b):.4f} | {time.perf_counter() - t0:.1f} |",
              flush=True)
    print(f"\nprotocol: {floor['protocol']}")


if __name__ == "__main__":
    main()
