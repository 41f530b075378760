"""Digital PET patients: FDG uptake (SUV) in the upper-abdominal torso slabs of :mod:`.ct_torso`.

Why the same anatomy: an FDG PET/CT study images one body twice, and the
PET cohort then has the organ shapes, sizes and per-patient variation the CT
cohort was built with. What changes is the contrast: each tissue's typical
standardised uptake value 60 min after FDG injection (:data:`SUV`; liver
~2–2.5, blood pool ~1.7, muscle ~0.7, fat ~0.3, lung ~0.4, the renal
collecting system high because FDG is excreted in urine, marrow ~1.6), and
in about half of the patients a few hot lesions (SUV 4–12, liver or
para-aortic nodes). Values are SUV *before* the scanner (site) adds its
resolution, calibration and count-limited reconstruction noise; see
:func:`fedsynth.data.cohort.scanner.apply_pet_scanner`.

    >>> suv = render_pet_patient(sample_pet_patient(rng), n_slices=16, size=64)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsynth.data.cohort.ct_torso import CTPatient, render_ct_patient, sample_ct_patient
from fedsynth.data.cohort.shapes import Grid, blob

__all__ = ["SUV", "PETPatient", "render_pet_patient", "sample_pet_patient"]

#: FDG uptake (SUV) per tissue of :data:`fedsynth.data.cohort.ct_torso.HU`, before per-patient variation.
SUV = {
    "air": 0.0, "lung": 0.4, "fat": 0.3, "muscle": 0.7, "soft": 1.1, "liver": 2.3, "spleen": 1.9,
    "kidney_cortex": 2.8, "kidney_medulla": 6.0, "aorta": 1.7, "ivc": 1.6, "bone_cortex": 0.5,
    "bone_marrow": 1.6, "csf": 0.2, "gas": 0.0, "fluid": 0.6, "vessel": 1.6, "skin": 0.7, "table": 0.0,
}
#: HU shifts and texture amplitudes of the anatomy become SUV at this rate (6 HU -> 0.04 SUV).
SUV_PER_HU = 0.007


@dataclass
class PETPatient:
    """One patient's anatomy (a :class:`CTPatient`) and hot lesions, drawn once by :func:`sample_pet_patient`."""

    body: CTPatient
    lesions: np.ndarray  # (n, 5): x, y, z, radius (grid units), SUV


def sample_pet_patient(rng: np.random.Generator, habitus: float = 0.0) -> PETPatient:
    """Draw one patient: the CT anatomy, then 0–4 lesions (about half of the patients have any)."""
    body = sample_ct_patient(rng, habitus)
    n = int(rng.integers(1, 5)) if rng.uniform() < 0.5 else 0
    liver = rng.uniform(size=n) < 0.5
    lx, ly, lax, lay, _ = body.liver
    x = np.where(liver, lx + rng.uniform(-0.5, 0.5, n) * lax, rng.uniform(-0.12, 0.15, n))
    y = np.where(liver, ly + rng.uniform(-0.5, 0.5, n) * lay, body.vert_y * body.body_b / 0.6 - 0.2
                 + rng.uniform(-0.05, 0.05, n))
    lesions = np.column_stack([x, y, rng.uniform(0.15, 0.85, n), rng.uniform(0.015, 0.04, n),
                               rng.uniform(4.0, 12.0, n)]).astype(np.float32).reshape(n, 5)
    return PETPatient(body=body, lesions=lesions)


def render_pet_patient(p: PETPatient, n_slices: int, size: int, fov: float = 1.0) -> np.ndarray:
    """Render ``(n_slices, size, size)`` SUV, float32, image rows anterior→posterior."""
    out = render_ct_patient(p.body, n_slices, size, fov, values=SUV, unit=SUV_PER_HU, tissue_floor=0.05)
    out = np.clip(out, 0.0, None)
    g = Grid(size, fov)
    zs = np.linspace(0.0, 1.0, n_slices, dtype=np.float32)
    for x, y, z0, r, suv in p.lesions:
        for i, z in enumerate(zs):
            w = 1.0 - ((float(z) - z0) / (1.25 * r)) ** 2  # a sphere (grid unit 200 mm, slab 160 mm)
            if w > 0:
                rr = r * np.sqrt(w)
                out[i] = np.maximum(out[i], suv * blob(g, x, y, rr, rr) * (out[i] > 0))
    return out.astype(np.float32)
