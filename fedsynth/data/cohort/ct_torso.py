"""Digital CT patients: upper-abdominal torso slabs in Hounsfield units.

A slab runs from the lung bases (top, z = 0) to the kidneys (bottom, z = 1).
Every structure has per-patient size, position and outline drawn once, and a
presence profile along z (lungs fade out, kidneys fade in, the liver peaks
in the middle), so that slices of one patient resemble each other more than
slices of different patients — the property the privacy gate's calibration
relies on. Values are in HU *before* the scanner (site) adds blur, noise and
calibration drift; see :mod:`fedsynth.data.cohort.scanner`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsynth.data.cohort.shapes import (
    Grid,
    blob,
    paint,
    ring_angles,
    smooth_field,
    smoothstep,
    wobble,
)

__all__ = ["CTPatient", "render_ct_patient", "sample_ct_patient"]

#: Tissue values (HU) before per-patient variation.
_HU = HU = {
    "air": -1000.0, "lung": -860.0, "fat": -95.0, "muscle": 50.0, "soft": 35.0, "liver": 60.0,
    "spleen": 48.0, "kidney_cortex": 165.0, "kidney_medulla": 95.0, "aorta": 185.0, "ivc": 125.0,
    "bone_cortex": 850.0, "bone_marrow": 240.0, "csf": 15.0, "gas": -950.0, "fluid": 12.0,
    "vessel": 45.0, "skin": 40.0, "table": 120.0,
}


def _bump(z: float, start: float, peak: float, end: float) -> float:
    return float(smoothstep(z, start, peak)) * (1.0 - float(smoothstep(z, peak, end)))


@dataclass
class CTPatient:
    """Per-patient anatomy, drawn once by :func:`sample_ct_patient`."""

    body_a: float
    body_b: float
    body_harm: np.ndarray
    fat: float
    muscle: float
    lung_end: float
    liver: tuple[float, float, float, float, float]  # cx, cy, ax, ay, hu
    liver_harm: np.ndarray
    spleen: tuple[float, float, float, float]
    kidney_start: float
    kidney: tuple[float, float, float, float]  # dx, cy, ax, ay
    vert_y: float
    aorta_r: float
    stomach: tuple[float, float, float, float, float]  # cx, cy, ax, ay, gas share
    rib_n: int
    rib_phase: np.ndarray
    lung_vessels: np.ndarray  # (n, 4): x, y at z=0, drift dx, dy over the slab
    bowel: np.ndarray  # (n, 6): x, y, ax, ay, kind (0 fluid, 1 gas), z_start
    hu_shift: dict[str, float]
    seed: int


def sample_ct_patient(rng: np.random.Generator, habitus: float = 0.0) -> CTPatient:
    """Draw one patient. ``habitus`` (about -1..1) shifts body size and fat thickness (site mix)."""
    body_a = float(np.clip(rng.normal(0.80 + 0.05 * habitus, 0.04), 0.62, 0.93))
    body_b = float(body_a * np.clip(rng.normal(0.74, 0.04), 0.62, 0.86))
    fat = float(np.clip(rng.normal(0.07 + 0.035 * habitus, 0.02), 0.02, 0.17))
    n_vessels = int(rng.integers(14, 26))
    vessels = np.column_stack([
        rng.uniform(-1, 1, n_vessels), rng.uniform(-1, 1, n_vessels),
        rng.normal(0, 0.25, n_vessels), rng.normal(0, 0.25, n_vessels),
    ]).astype(np.float32)
    n_bowel = int(rng.integers(7, 14))
    bowel = np.column_stack([
        rng.uniform(-0.45, 0.45, n_bowel), rng.uniform(-0.55, 0.15, n_bowel),
        rng.uniform(0.04, 0.09, n_bowel), rng.uniform(0.03, 0.07, n_bowel),
        (rng.uniform(size=n_bowel) < 0.35).astype(np.float32), rng.uniform(0.3, 0.7, n_bowel),
    ]).astype(np.float32)
    return CTPatient(
        body_a=body_a, body_b=body_b, body_harm=wobble(rng, 4, 0.05), fat=fat,
        muscle=float(rng.uniform(0.03, 0.05)),
        lung_end=float(rng.uniform(0.30, 0.50)),
        liver=(float(rng.normal(-0.33, 0.04)), float(rng.normal(-0.08, 0.04)),
               float(rng.uniform(0.30, 0.40)), float(rng.uniform(0.38, 0.50)), float(rng.normal(0, 8))),
        liver_harm=wobble(rng, 5, 0.12),
        spleen=(float(rng.normal(0.50, 0.03)), float(rng.normal(0.18, 0.04)),
                float(rng.uniform(0.09, 0.15)), float(rng.uniform(0.16, 0.26))),
        kidney_start=float(rng.uniform(0.40, 0.60)),
        kidney=(float(rng.uniform(0.26, 0.33)), float(rng.normal(0.30, 0.03)),
                float(rng.uniform(0.08, 0.11)), float(rng.uniform(0.12, 0.16))),
        vert_y=float(rng.normal(0.40, 0.03)),
        aorta_r=float(rng.uniform(0.030, 0.045)),
        stomach=(float(rng.normal(0.25, 0.05)), float(rng.normal(-0.25, 0.05)),
                 float(rng.uniform(0.12, 0.2)), float(rng.uniform(0.1, 0.16)), float(rng.uniform(0.0, 0.45))),
        rib_n=int(rng.integers(8, 12)), rib_phase=rng.uniform(0, 2 * np.pi, 12).astype(np.float32),
        lung_vessels=vessels, bowel=bowel,
        hu_shift={k: float(rng.normal(0, 6)) for k in ("liver", "spleen", "muscle", "fat", "kidney_cortex")},
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def render_ct_patient(p: CTPatient, n_slices: int, size: int, fov: float = 1.0,
                      values: dict[str, float] | None = None, unit: float = 1.0,
                      tissue_floor: float = -900.0) -> np.ndarray:
    """Render ``(n_slices, size, size)`` HU, float32, image rows anterior→posterior.

    ``values`` replaces the tissue table :data:`HU` (e.g. FDG uptake for the
    PET cohort, :mod:`.pet_body`), ``unit`` scales every per-patient shift and
    texture amplitude (written in HU), and ``tissue_floor`` is the value
    above which a pixel counts as tissue for the texture: the same anatomy
    seen through another contrast.
    """
    HU = _HU if values is None else values  # noqa: N806 - the table's name in the formulas below
    u = float(unit)
    g = Grid(size, fov)
    rng = np.random.default_rng(p.seed)
    # 3-D fields: z-coherent texture and the fat / soft-tissue mixing of the mesentery.
    texture = smooth_field(rng, (n_slices, size, size), (0.8, 1.2, 1.2))
    mixing = smooth_field(rng, (n_slices, size, size), (1.5, 3.0, 3.0))
    zs = np.linspace(0.0, 1.0, n_slices, dtype=np.float32)
    out = np.empty((n_slices, size, size), dtype=np.float32)
    sh = p.hu_shift
    for i, z in enumerate(zs):
        z = float(z)
        # Body grows slightly towards the abdomen; its outline drifts with z.
        ba, bb = p.body_a * (1 + 0.04 * z), p.body_b * (1 + 0.03 * z)
        body_cy = 0.05
        body = blob(g, 0.0, body_cy, ba, bb, 0.0, p.body_harm)
        inner_fat = blob(g, 0.0, body_cy, ba - 0.015, bb - 0.015, 0.0, p.body_harm)
        wall = blob(g, 0.0, body_cy, ba - p.fat, bb - p.fat, 0.0, p.body_harm)
        cavity = blob(g, 0.0, body_cy + 0.01, ba - p.fat - p.muscle, bb - p.fat - p.muscle, 0.0, p.body_harm)
        img = np.full((size, size), HU["air"], dtype=np.float32)
        # Table under the patient.
        table = (np.abs(g.y - (body_cy + bb + 0.06)) < 0.012).astype(np.float32) * (np.abs(g.x) < 0.9)
        img = paint(img, table, HU["table"])
        img = paint(img, body, HU["skin"])
        img = paint(img, inner_fat, HU["fat"] + u * sh["fat"])
        img = paint(img, wall, HU["muscle"] + u * sh["muscle"])
        # Abdominal cavity: mesenteric fat mixed with soft tissue.
        mix = 1.0 / (1.0 + np.exp(-2.5 * (mixing[i] + 0.2)))
        cav_val = HU["fat"] * (1 - mix) + HU["soft"] * mix
        img = paint(img, cavity, cav_val)
        # Bowel loops (lower slab), gas or fluid filled, with walls.
        for bx, by, bax, bay, kind, zst in p.bowel:
            w = float(smoothstep(z, zst, zst + 0.15))
            if w <= 0:
                continue
            loop = blob(g, bx * ba, body_cy + by * bb, bax * w, bay * w) * cavity
            img = paint(img, loop, HU["soft"] + u * 10)
            lumen = blob(g, bx * ba, body_cy + by * bb, bax * w * 0.7, bay * w * 0.7) * cavity
            img = paint(img, lumen, HU["gas"] if kind > 0.5 else HU["fluid"])
        # Stomach (upper-left of the abdomen) with an anterior gas cap.
        s_w = _bump(z, 0.0, 0.25, 0.6)
        if s_w > 0:
            sx, sy, sax, say, gas = p.stomach
            st = blob(g, sx, sy, sax * s_w, say * s_w, 0.4) * cavity
            img = paint(img, st, HU["fluid"] + u * 15)
            cap = st * (g.y < sy - say * s_w * (1 - 2 * gas)).astype(np.float32)
            img = paint(img, cap, HU["gas"])
        # Lungs at the top of the slab, with a vessel tree.
        l_w = 1.0 - float(smoothstep(z, p.lung_end - 0.25, p.lung_end))
        if l_w > 0:
            for side in (-1.0, 1.0):
                lung = blob(g, side * 0.45 * ba, body_cy + 0.12 * bb, 0.30 * ba * l_w, 0.62 * bb * l_w,
                            side * 0.15, p.body_harm) * cavity
                img = paint(img, lung, HU["lung"])
                for vx, vy, dx, dy in p.lung_vessels:
                    cx = side * 0.45 * ba + (vx + dx * z) * 0.25 * ba
                    cy = body_cy + 0.12 * bb + (vy + dy * z) * 0.55 * bb
                    img = paint(img, blob(g, cx, cy, 0.018, 0.018) * lung, HU["vessel"])
        # Liver (patient's right = image left), spleen, kidneys.
        lx, ly, lax, lay, lhu = p.liver
        lv_w = _bump(z, -0.2, 0.35, 1.05)
        liver = blob(g, lx * ba / 0.8, ly, lax * lv_w, lay * lv_w, -0.3, p.liver_harm) * cavity
        img = paint(img, liver, HU["liver"] + u * lhu + u * sh["liver"])
        img = paint(img, blob(g, lx * ba / 0.8 + 0.05, ly + 0.05, 0.03, 0.025) * liver, HU["vessel"] - u * 10)
        spx, spy, spax, spay = p.spleen
        sp_w = _bump(z, 0.0, 0.3, 0.75)
        img = paint(img, blob(g, spx * ba / 0.8, spy, spax * sp_w, spay * sp_w, 0.5) * cavity,
                     HU["spleen"] + u * sh["spleen"])
        k_w = float(smoothstep(z, p.kidney_start, p.kidney_start + 0.2))
        if k_w > 0:
            kdx, kcy, kax, kay = p.kidney
            for side in (-1.0, 1.0):
                kx = side * kdx * ba / 0.8
                kid = blob(g, kx, kcy, kax * k_w, kay * k_w, side * 0.35) * cavity
                img = paint(img, kid, HU["kidney_cortex"] + u * sh["kidney_cortex"])
                img = paint(img, blob(g, kx, kcy, kax * k_w * 0.6, kay * k_w * 0.6, side * 0.35) * kid,
                             HU["kidney_medulla"])
                img = paint(img, blob(g, kx - side * 0.03, kcy, kax * k_w * 0.3, kay * k_w * 0.3) * kid,
                             HU["fat"])
        # Spine: vertebral body with cortex, canal, posterior elements; paraspinal muscles.
        vy = p.vert_y * bb / 0.6
        for side in (-1.0, 1.0):
            img = paint(img, blob(g, side * 0.11, vy + 0.17, 0.08, 0.07) * wall, HU["muscle"] + u * sh["muscle"])
            if z > 0.45:
                img = paint(img, blob(g, side * 0.1, vy - 0.02, 0.045 * float(smoothstep(z, 0.45, 0.8)),
                                       0.04) * cavity, HU["muscle"])
        vb = blob(g, 0.0, vy, 0.075, 0.065)
        img = paint(img, vb, HU["bone_cortex"])
        img = paint(img, blob(g, 0.0, vy, 0.06, 0.05), HU["bone_marrow"] + (40 * u) * texture[i])
        img = paint(img, blob(g, 0.0, vy + 0.1, 0.04, 0.035), HU["bone_cortex"] * 0.8)
        img = paint(img, blob(g, 0.0, vy + 0.1, 0.027, 0.024), HU["csf"])
        img = paint(img, blob(g, 0.0, vy + 0.17, 0.018, 0.04), HU["bone_cortex"] * 0.8)
        # Aorta (left-anterior of the spine) and IVC (right).
        img = paint(img, blob(g, 0.05, vy - 0.12, p.aorta_r, p.aorta_r), HU["aorta"])
        img = paint(img, blob(g, -0.09, vy - 0.13, 0.045, 0.03) * cavity, HU["ivc"])
        # Ribs along the inside of the body wall, fewer towards the bottom.
        r_w = 1.0 - float(smoothstep(z, 0.55, 0.9))
        if r_w > 0:
            angles = ring_angles(rng=np.random.default_rng(p.seed + 7), n=p.rib_n,
                                 start=-0.15 * np.pi, stop=1.15 * np.pi, jitter=0.05)
            for j, a in enumerate(angles):
                a = float(a + 0.15 * np.sin(p.rib_phase[j] + 4 * z))
                rx = np.cos(a) * (ba - p.fat - 0.02)
                ry = body_cy + np.sin(a) * (bb - p.fat - 0.02)
                rib = blob(g, rx, ry, 0.03 * r_w, 0.016 * r_w, a + np.pi / 2)
                img = paint(img, rib, HU["bone_cortex"] * 0.9)
                img = paint(img, blob(g, rx, ry, 0.018 * r_w, 0.007 * r_w, a + np.pi / 2), HU["bone_marrow"])
        # Tissue texture on everything that is not air.
        tissue = (img > tissue_floor).astype(np.float32) * body
        out[i] = img + (12.0 * u) * texture[i] * tissue
    return out
