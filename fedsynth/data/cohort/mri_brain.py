"""Digital MRI patients: T1-weighted axial brain slabs (arbitrary scanner units).

A slab runs from the basal ganglia (z = 0) to above the lateral ventricles
(z = 1). Per patient: head size and shape, scalp and skull thickness, cortical
folding pattern, ventricle size (age), deep grey nuclei, and in about a third
of patients a few white-matter lesions (T1-hypointense). Intensities are
relative T1w signal before the scanner (site) adds bias field, blur and
Rician noise; see :mod:`fedsynth.data.cohort.scanner`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsynth.data.cohort.shapes import Grid, blob, paint, smooth_field, smoothstep, wobble

__all__ = ["MRIPatient", "render_mri_patient", "sample_mri_patient"]

SIGNAL = {"air": 0.0, "scalp": 0.85, "skull": 0.06, "diploe": 0.35, "csf": 0.12,
          "gm": 0.52, "wm": 0.80, "deep_gm": 0.60, "lesion": 0.36}


@dataclass
class MRIPatient:
    """Per-patient anatomy, drawn once by :func:`sample_mri_patient`."""

    head_a: float
    head_b: float
    head_harm: np.ndarray
    scalp: float
    skull: float
    gyri: np.ndarray  # (n, 3): k, amplitude, phase of the cortical folding
    sulci_n: int
    sulci_phase: float
    ventricle: float
    atrophy: float
    lesions: np.ndarray  # (n, 5): x, y, z, r, depth in z
    gm_wm: float
    seed: int


def sample_mri_patient(rng: np.random.Generator, age: float = 0.0) -> MRIPatient:
    """Draw one patient. ``age`` (about -1..1) enlarges ventricles and sulci (site mix)."""
    n_les = int(rng.integers(1, 5)) if rng.uniform() < 0.3 + 0.2 * max(age, 0) else 0
    lesions = np.column_stack([
        rng.uniform(-0.35, 0.35, n_les), rng.uniform(-0.45, 0.35, n_les), rng.uniform(0.2, 0.9, n_les),
        rng.uniform(0.02, 0.05, n_les), rng.uniform(0.08, 0.2, n_les),
    ]).astype(np.float32).reshape(n_les, 5)
    k = np.arange(8, 20, dtype=np.float32)
    gyri = np.column_stack([k, rng.uniform(0.004, 0.014, k.size), rng.uniform(0, 2 * np.pi, k.size)])
    head_a = float(np.clip(rng.normal(0.70, 0.03), 0.6, 0.8))
    return MRIPatient(
        head_a=head_a, head_b=float(head_a * np.clip(rng.normal(1.22, 0.04), 1.1, 1.35)),
        head_harm=wobble(rng, 3, 0.03), scalp=float(rng.uniform(0.035, 0.06)),
        skull=float(rng.uniform(0.035, 0.055)), gyri=gyri.astype(np.float32),
        sulci_n=int(rng.integers(18, 28)), sulci_phase=float(rng.uniform(0, 2 * np.pi)),
        ventricle=float(np.clip(rng.normal(1.0 + 0.35 * age, 0.15), 0.6, 1.9)),
        atrophy=float(np.clip(rng.normal(0.015 + 0.012 * age, 0.006), 0.0, 0.04)),
        lesions=lesions, gm_wm=float(rng.normal(0, 0.02)), seed=int(rng.integers(0, 2**31 - 1)),
    )


def render_mri_patient(p: MRIPatient, n_slices: int, size: int, fov: float = 1.0) -> np.ndarray:
    """Render ``(n_slices, size, size)`` T1w signal, float32, image rows anterior→posterior."""
    g = Grid(size, fov)
    rng = np.random.default_rng(p.seed)
    texture = smooth_field(rng, (n_slices, size, size), (0.8, 1.5, 1.5))
    zs = np.linspace(0.0, 1.0, n_slices, dtype=np.float32)
    out = np.empty((n_slices, size, size), dtype=np.float32)
    phi = np.arctan2(g.y, g.x)
    for i, z in enumerate(zs):
        z = float(z)
        shrink = 1.0 - 0.12 * z * z  # the head narrows towards the vertex
        ha, hb = p.head_a * shrink, p.head_b * shrink
        img = np.zeros((size, size), dtype=np.float32)
        img = paint(img, blob(g, 0, 0, ha, hb, 0, p.head_harm), SIGNAL["scalp"])
        t = p.scalp
        img = paint(img, blob(g, 0, 0, ha - t, hb - t, 0, p.head_harm), SIGNAL["skull"])
        img = paint(img, blob(g, 0, 0, ha - t - 0.4 * p.skull, hb - t - 0.4 * p.skull, 0, p.head_harm),
                     SIGNAL["diploe"])
        img = paint(img, blob(g, 0, 0, ha - t - 0.7 * p.skull, hb - t - 0.7 * p.skull, 0, p.head_harm),
                     SIGNAL["skull"])
        t += p.skull
        img = paint(img, blob(g, 0, 0, ha - t, hb - t, 0, p.head_harm), SIGNAL["csf"])
        t += 0.012 + p.atrophy
        # Cortex: the outline folds with z-dependent phases (gyri), sulci cut in radially.
        folds = p.gyri.copy()
        folds[:, 2] += 1.5 * z
        brain = blob(g, 0, 0, ha - t, hb - t, 0, np.vstack([p.head_harm, folds]))
        img = paint(img, brain, SIGNAL["gm"] + 0.03 * texture[i])
        sulci = (np.cos(p.sulci_n * phi + p.sulci_phase + 2.0 * z) > 0.93).astype(np.float32)
        deep = blob(g, 0, 0, ha - t - 0.09 - 2 * p.atrophy, hb - t - 0.09 - 2 * p.atrophy, 0, folds)
        img = paint(img, sulci * brain * (1 - deep), SIGNAL["csf"])
        # Interhemispheric fissure.
        fissure = (np.abs(g.x) < 0.012 + p.atrophy * 0.5).astype(np.float32) * (np.abs(g.y) > 0.25 * hb)
        img = paint(img, fissure * brain, SIGNAL["csf"])
        # White matter, following the gyri inwards.
        wm_folds = folds.copy()
        wm_folds[:, 1] *= 2.5
        wm = blob(g, 0, 0, ha - t - 0.06, hb - t - 0.07, 0, wm_folds) * (1 - fissure)
        img = paint(img, wm, SIGNAL["wm"] + p.gm_wm + 0.02 * texture[i])
        # Deep grey nuclei low in the slab; ventricles peak in the middle.
        dg = 1.0 - float(smoothstep(z, 0.3, 0.6))
        if dg > 0:
            for side in (-1.0, 1.0):
                img = paint(img, blob(g, side * 0.2, 0.0, 0.07 * dg, 0.13 * dg, side * 0.3), SIGNAL["deep_gm"])
                img = paint(img, blob(g, side * 0.1, 0.15, 0.07 * dg, 0.09 * dg), SIGNAL["deep_gm"] + 0.05)
        v = p.ventricle * (0.5 + 0.5 * float(smoothstep(z, 0.0, 0.5))) * (1 - 0.8 * float(smoothstep(z, 0.75, 1.0)))
        for side in (-1.0, 1.0):
            img = paint(img, blob(g, side * 0.075 * v, -0.04, 0.045 * v, 0.26 * v, side * 0.12), SIGNAL["csf"])
            img = paint(img, blob(g, side * 0.13 * v, -0.27 * v, 0.035 * v, 0.03 * v), SIGNAL["deep_gm"])
        for lx, ly, lz, lr, ld in p.lesions:
            w = max(0.0, 1.0 - ((z - lz) / ld) ** 2)
            if w > 0:
                img = paint(img, blob(g, lx, ly, lr * np.sqrt(w), lr * np.sqrt(w)) * wm, SIGNAL["lesion"])
        out[i] = img
    return out
