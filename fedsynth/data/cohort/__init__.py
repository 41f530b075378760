"""The bundled multi-site cohort: realistic digital patients written as NIfTI.

No multi-patient CT or MRI set can be installed from the package registries
here, and downloading data at run time is not allowed, so fedsynth ships a
generator of digital patients (:mod:`.ct_torso`, :mod:`.mri_brain`, :mod:`.pet_body`) seen
through per-site scanners (:mod:`.scanner`). Its output goes through exactly
the same ingestion as a hospital's real data.

>>> make_cohort("ct", sites=3, patients=8, out="runs/cohort")   # runs/cohort/site-1/ct1-p000.nii.gz, ...
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from fedsynth.config import StrictModel, validate
from fedsynth.data.cohort.ct_torso import render_ct_patient, sample_ct_patient
from fedsynth.data.cohort.mri_brain import render_mri_patient, sample_mri_patient
from fedsynth.data.cohort.pet_body import render_pet_patient, sample_pet_patient
from fedsynth.data.cohort.scanner import (
    SiteScanner,
    apply_ct_scanner,
    apply_mri_scanner,
    apply_pet_scanner,
    site_scanners,
)
from fedsynth.errors import ConfigError
from fedsynth.io_utils import atomic_dir, write_json_atomic
from fedsynth.progress import progress

__all__ = ["CohortSettings", "SiteScanner", "cohort_volume", "ct_patients", "make_cohort", "site_scanners"]

log = logging.getLogger(__name__)

#: Slab thickness along z (mm): CT upper abdomen, MRI ventricle level.
SLAB_MM = {"ct": 160.0, "mri": 64.0, "pet": 160.0}
#: Reconstruction diameter (mm) at fov = 1.
FOV_MM = {"ct": 400.0, "mri": 240.0, "pet": 400.0}


class CohortSettings(StrictModel):
    """What ``fedsynth data make-cohort`` accepts."""

    modality: Literal["ct", "mri", "pet"]
    sites: int = Field(ge=1, le=64)
    patients: int = Field(ge=1, le=1000, description="patients per site")
    slices: int = Field(default=32, ge=1, le=512)
    size: int = Field(default=128, ge=16, le=1024)
    seed: int = Field(default=0, ge=0)


def cohort_volume(settings: CohortSettings, site: int, patient: int) -> tuple[np.ndarray, np.ndarray, SiteScanner]:
    """One patient's volume as stored: ``(data, affine, scanner)``.

    ``data`` is in the stored voxel orientation (the site's axis codes); CT is
    integer HU, MRI non-negative signal units, PET activity in SUV (stored x 1000). Deterministic in
    (seed, site, patient) and independent of how many sites/patients are made.
    """
    from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

    scanner = site_scanners(settings.modality, site, settings.seed)[site - 1]
    rng = np.random.default_rng([settings.seed, site, patient])
    mix = scanner.patient_mix + float(rng.normal(0, 0.5))
    if settings.modality == "ct":
        img = render_ct_patient(sample_ct_patient(rng, mix), settings.slices, settings.size, scanner.fov)
        img = apply_ct_scanner(img, scanner, rng)
    elif settings.modality == "pet":
        img = render_pet_patient(sample_pet_patient(rng, mix), settings.slices, settings.size, scanner.fov)
        img = apply_pet_scanner(img, scanner, rng)
    else:
        img = render_mri_patient(sample_mri_patient(rng, mix), settings.slices, settings.size, scanner.fov)
        img = apply_mri_scanner(img, scanner, rng)
    # Image space (z, row anterior→posterior, column) -> canonical RAS (x, y, z); the slab is stored
    # top (z = 0) first in the image, so superior is the last z index.
    ras = np.ascontiguousarray(img[::-1, ::-1, :].transpose(2, 1, 0))
    sx = FOV_MM[settings.modality] * scanner.fov / settings.size
    sz = SLAB_MM[settings.modality] / settings.slices
    affine = np.diag([sx, sx, sz, 1.0])
    affine[:3, 3] = -0.5 * np.array(ras.shape) * np.array([sx, sx, sz])
    t = ornt_transform(axcodes2ornt(("R", "A", "S")), axcodes2ornt(tuple(scanner.orientation)))
    data = apply_orientation(ras, t)
    affine = affine @ inv_ornt_aff(t, ras.shape)
    return np.ascontiguousarray(data), affine, scanner


def ct_patients(n: int, seed: int = 0, size: int = 64, slices: int = 24) -> list[np.ndarray]:
    """``n`` digital CT patients of site-1's scanner as ``[0, 1]`` slice stacks (slices, size, size), in memory.

    For benchmarks and tests that need realistic slices of several patients
    without writing and ingesting NIfTI files: the renderer and scanner of
    :func:`make_cohort` and the ingestion window, patients seeded by
    ``(seed, patient)`` (not the same patients as a cohort's).
    """
    from fedsynth.data.normalise import hu_to_window

    scanner = site_scanners("ct", 1, 0)[0]
    out = []
    for p in range(n):
        rng = np.random.default_rng([seed, p])
        mix = scanner.patient_mix + float(rng.normal(0, 0.5))
        img = render_ct_patient(sample_ct_patient(rng, mix), slices, size, scanner.fov)
        out.append(hu_to_window(apply_ct_scanner(img, scanner, rng)).astype(np.float32))
    return out


def _save(path: Path, data: np.ndarray, affine: np.ndarray, modality: str) -> None:
    import nibabel as nib

    if modality == "ct":
        # Stored like a scanner does: unsigned-offset integers with scl_slope/scl_inter giving HU.
        raw = (data + 1024).astype(np.int16)
        img = nib.Nifti1Image(raw, affine)
        img.header.set_slope_inter(1.0, -1024.0)
    elif modality == "pet":
        # Stored like many PET exports: integers with a slope giving the activity (here SUV; Bq/ml would
        # only scale it, and ingestion normalises each PET volume by its own robust maximum).
        img = nib.Nifti1Image(np.clip(np.rint(data * 1000.0), 0, 32767).astype(np.int16), affine)
        img.header.set_slope_inter(1e-3, 0.0)
    else:
        img = nib.Nifti1Image(np.clip(np.rint(data), 0, 32767).astype(np.int16), affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, path)


def make_cohort(
    modality: str,
    sites: int,
    patients: int,
    out: str | Path,
    slices: int = 32,
    size: int = 128,
    seed: int = 0,
    progress_bar: bool = True,
) -> list[Path]:
    """Write ``out/site-K/<patient_id>.nii.gz`` for K = 1..sites and return the volume paths.

    The whole cohort is built in a temporary directory and renamed into place,
    so an interrupted run leaves nothing. If ``out`` already holds a cohort made
    with the same settings it is reused; any other existing ``out`` is refused.
    """
    settings = validate(CohortSettings, dict(modality=modality, sites=sites, patients=patients,
                                             slices=slices, size=size, seed=seed), "make-cohort")
    out = Path(out)
    stamp = {"fedsynth-cohort": 1, **settings.model_dump()}
    if out.exists():
        manifest = out / "cohort.json"
        try:
            same = json.loads(manifest.read_text(encoding="utf-8")) == stamp
        except (OSError, ValueError):
            same = False
        if not same:
            raise ConfigError(f"{out}: exists and is not a cohort made with these settings; "
                              "choose another --out or remove it")
        log.info("cohort with these settings already at %s", out)
        return sorted(out.glob("site-*/*.nii.gz"))
    jobs = [(k, j) for k in range(1, settings.sites + 1) for j in range(settings.patients)]
    with atomic_dir(out) as tmp:
        for k, j in progress(jobs, enabled=progress_bar, desc="digital patients", unit="patient"):
            data, affine, _ = cohort_volume(settings, k, j)
            site_dir = tmp / f"site-{k}"
            site_dir.mkdir(exist_ok=True)
            _save(site_dir / f"{settings.modality}{k}-p{j:03d}.nii.gz", data, affine, settings.modality)
        scanners = {f"site-{k}": s.model_dump() for k, s in
                    enumerate(site_scanners(settings.modality, settings.sites, settings.seed), start=1)}
        write_json_atomic(tmp / "cohort.json", stamp)
        write_json_atomic(tmp / "scanners.json", scanners)
    log.info("wrote %d volumes under %s", len(jobs), out)
    return sorted(out.glob("site-*/*.nii.gz"))
