"""Low-dose CT as physics: pixel size from the voxel spacing, the fan-beam projector against ASTRA, noise vs dose and size.

ASTRA (``astra-toolbox``, CPU projectors) is the maintained reference for the
fan-beam geometry; scikit-image is the parallel-beam one (test_tasks_degrade).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedsynth.data import ingest_site
from fedsynth.data.cohort import FOV_MM, make_cohort, site_scanners
from fedsynth.tasks import TaskConfig, low_dose_ct, make_pairs
from fedsynth.tasks.ct_sim import SIEMENS_SID_MM, hu_to_unit
from fedsynth.tasks.projector import fbp_torch, radon_torch
from fedsynth.tasks.projector_fan import FanGeometry, fan_fbp, fan_project

astra = pytest.importorskip("astra", reason="astra-toolbox is a dev dependency (pip install -e '.[dev]')")

N = 64
PIX = 6.25  # mm: a 400 mm field of view in 64 pixels, the bundled CT cohort at scanner fov 1
SDD_MM = 1085.6
# Stated tolerances: bilinear ray sampling against ASTRA's strip (area-weighted) projector.
FAN_SINO_REL_RMSE = 3e-3
FAN_SINO_REL_MAX = 3e-2


def _phantom() -> np.ndarray:
    yy, xx = np.mgrid[:N, :N]
    img = np.zeros((N, N), np.float32)
    img[(yy - 30) ** 2 + (xx - 32) ** 2 < 26**2] = 1.0  # body, off-centre
    img[(yy - 20) ** 2 + (xx - 42) ** 2 < 6**2] = 2.0  # an asymmetric insert: catches flipped axes
    img[8:14, 20:30] = 1.5
    return img


def _astra_fan(img: np.ndarray, geo: FanGeometry) -> np.ndarray:
    r = geo.source_px
    d = (SDD_MM - SIEMENS_SID_MM) / PIX
    vol = astra.create_vol_geom(N, N)
    proj = astra.create_proj_geom("fanflat", (r + d) / r, geo.n_det, geo.angles(), r, d)  # bins 1 px at isocentre
    pid = astra.create_projector("strip_fanflat", proj, vol)
    sid, sino = astra.create_sino(img, pid)
    astra.data2d.delete(sid)
    astra.projector.delete(pid)
    return sino


def test_fan_projector_matches_astra() -> None:
    img = _phantom()
    geo = FanGeometry.make(N, SIEMENS_SID_MM / PIX, 1152)
    ref = _astra_fan(img, geo)
    ours = fan_project(torch.from_numpy(img)[None], geo)[0].numpy()
    assert ours.shape == ref.shape == (1152, geo.n_det)
    scale = np.abs(ref).max()
    assert np.sqrt(np.mean((ours - ref) ** 2)) < FAN_SINO_REL_RMSE * scale
    assert np.abs(ours - ref).max() < FAN_SINO_REL_MAX * scale


def test_fan_fbp_reconstructs_astra_projections_as_well_as_parallel_fbp() -> None:
    img = _phantom()
    geo = FanGeometry.make(N, SIEMENS_SID_MM / PIX, 1152)
    rec = fan_fbp(torch.from_numpy(_astra_fan(img, geo))[None], geo)[0].numpy()
    par = fbp_torch(radon_torch(torch.from_numpy(img)[None], 101), N)[0].numpy()
    yy, xx = np.mgrid[:N, :N]
    inside = (yy - 31.5) ** 2 + (xx - 31.5) ** 2 < 28**2
    err_fan = float(np.sqrt(np.mean((rec - img)[inside] ** 2)))
    err_par = float(np.sqrt(np.mean((par - img)[inside] ** 2)))
    assert err_fan < 0.1 and err_fan < 1.2 * err_par
    assert abs(rec[inside].mean() - img[inside].mean()) < 0.01  # no scale error


def test_fan_geometry_refuses_a_source_inside_the_field() -> None:
    with pytest.raises(ValueError, match="outside"):
        FanGeometry.make(64, 30.0, 1152)


def _water(diameter_mm: float, n: int = 16) -> np.ndarray:
    yy, xx = np.mgrid[:N, :N] - (N - 1) / 2
    disc = np.where(np.hypot(yy, xx) * PIX < diameter_mm / 2, 0.0, -1000.0)  # HU: water in air
    return np.repeat(hu_to_unit(disc)[None].astype(np.float32), n, axis=0)


def _centre_sd_hu(diameter_mm: float, geometry: str, dose: float) -> float:
    imgs = _water(diameter_mm)
    low = low_dose_ct(imgs, pixel_mm=PIX, dose_fraction=dose, photons=4e4, geometry=geometry,
                      n_angles=None if geometry == "fan" else 360, seed=0)
    yy, xx = np.mgrid[:N, :N] - (N - 1) / 2
    roi = np.hypot(yy, xx) * PIX < 40.0  # central 8 cm
    return float(((low - imgs) * 2000.0)[:, roi].std())


@pytest.mark.parametrize("geometry", ["parallel", "fan"])
def test_noise_sd_scales_as_inverse_sqrt_dose_and_grows_with_patient_size(geometry: str) -> None:
    full, quarter = _centre_sd_hu(200.0, geometry, 1.0), _centre_sd_hu(200.0, geometry, 0.25)
    assert quarter / full == pytest.approx(2.0, rel=0.1)  # sqrt(1 / 0.25); measured 2.03 / 1.93 (parallel / fan)
    # 15 cm more water: transmission exp(-0.0192 * 150) = 5.6 %, so sqrt(1 / 0.056) = 4.2x the SD at the centre
    big = _centre_sd_hu(350.0, geometry, 0.25)
    assert 3.5 < big / quarter < 5.5  # measured 4.5 / 4.7


def test_pixel_size_comes_from_the_voxel_spacing(tmp_path: Path) -> None:
    make_cohort("ct", sites=2, patients=2, slices=8, size=48, out=tmp_path / "ct", progress_bar=False)
    scanners = site_scanners("ct", 2, seed=0)
    for k in (1, 2):
        store = ingest_site(tmp_path / "ct" / f"site-{k}", "ct", out=tmp_path / f"cache{k}", size=32, progress=False)
        expected = FOV_MM["ct"] * scanners[k - 1].fov / 32  # the field of view over the slice's pixels
        np.testing.assert_allclose(store.pixel_mm, expected, rtol=1e-6)
        assert store.typical_pixel_mm() == pytest.approx(expected)
    # ... and it matters: at the real pixel size rays through the torso reach line integrals of ~6 (photon
    # starvation), where the old constant 0.8 mm gave < 1 (transmission > 40 %, not low-dose CT)
    mu = 0.0192 * np.clip(1.0 + (store.train_images() * 2000.0 - 1000.0) / 1000.0, 0.0, None)
    longest = float(radon_torch(torch.from_numpy(mu.astype(np.float32)), 90).max()) * store.typical_pixel_mm()
    assert longest > 4.0
    assert longest * 0.8 / store.typical_pixel_mm() < 1.0
    cfg = TaskConfig(task="ldct")
    x, _ = make_pairs(store.train_images()[:2], cfg, 0, pixel_mm=store.pixel_mm_of("train")[:2])
    assert x.shape == (2, 32, 32)


def test_each_image_is_scanned_at_its_own_pixel_size() -> None:
    """A stack mixing two sites' pixel sizes (the pool): each run of equal sizes gets its own geometry."""
    imgs = _water(200.0, n=4)
    mixed = low_dose_ct(imgs, pixel_mm=np.array([PIX, PIX, 2 * PIX, 2 * PIX]), seed=3)
    first = low_dose_ct(imgs[:2], pixel_mm=PIX, seed=3)  # the first run draws the first noise, as alone
    np.testing.assert_array_equal(mixed[:2], first)
    # at twice the pixel the 200 mm disc is 400 mm of water: far fewer photons through it, more noise
    assert np.std(mixed[2:] - imgs[2:]) > 2 * np.std(mixed[:2] - imgs[:2])
    with pytest.raises(ValueError, match="positive"):
        low_dose_ct(imgs, pixel_mm=np.array([PIX, 0.0, PIX, PIX]))


def test_low_count_pet_adds_the_noise_thinning_leaves_and_only_that() -> None:
    yy, xx = np.mgrid[:64, :64]
    body = ((yy - 31.5) ** 2 + (xx - 31.5) ** 2 < 24**2)
    clean = np.repeat((0.3 * body)[None], 16, axis=0).astype(np.float32)
    centre = ((yy - 31.5) ** 2 + (xx - 31.5) ** 2 < 10**2)
    sd = {}
    for f in (0.05, 0.2):
        cfg = TaskConfig(task="lcpet", count_fraction=f, pet_counts=2e5)
        assert cfg.network == "rednet"
        low, target = make_pairs(clean, cfg, seed=0)
        np.testing.assert_array_equal(target, clean)
        sd[f] = float((low - clean)[:, centre].std())
        np.testing.assert_array_equal(low, make_pairs(clean, cfg, seed=0)[0])  # deterministic by seed
    # added variance is proportional to (1 - f) / f: the part of a 1/(f N) scan the full scan lacks
    assert sd[0.05] / sd[0.2] == pytest.approx(np.sqrt((0.95 / 0.05) / (0.8 / 0.2)), rel=0.1)
