"""The bundled cohort: deterministic, realistic enough to matter, non-IID, written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import fedsynth.data.cohort as cohort
from fedsynth.cli import main
from fedsynth.data import ingest_site, load_volume
from fedsynth.data.cohort import CohortSettings, cohort_volume, make_cohort

SMALL = dict(sites=3, patients=3, slices=12, size=48)


@pytest.fixture(scope="module")
def ct_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cohort") / "ct"
    make_cohort("ct", out=out, progress_bar=False, **SMALL)
    return out


def _volumes(root: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(root).as_posix(): np.asarray(nib.load(p).dataobj) for p in sorted(root.glob("site-*/*.nii.gz"))}


def test_layout_ids_and_ct_storage(ct_cohort: Path) -> None:
    files = sorted(p.relative_to(ct_cohort).as_posix() for p in ct_cohort.glob("site-*/*.nii.gz"))
    assert files == [f"site-{k}/ct{k}-p{j:03d}.nii.gz" for k in (1, 2, 3) for j in range(3)]
    img = nib.load(ct_cohort / "site-1" / "ct1-p000.nii.gz")
    assert img.get_data_dtype() == np.int16
    assert (img.dataobj.slope, img.dataobj.inter) == (1.0, -1024.0)
    hu = load_volume(ct_cohort / "site-1" / "ct1-p000.nii.gz").data
    assert hu.min() >= -1024 and hu.max() > 300  # air and bone present, in HU
    assert np.mean(hu < -900) > 0.2 and np.mean((hu > -150) & (hu < 150)) > 0.2


def test_deterministic_by_seed(ct_cohort: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    make_cohort("ct", out=again, progress_bar=False, **SMALL)
    a, b = _volumes(ct_cohort), _volumes(again)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    other = tmp_path / "other"
    make_cohort("ct", out=other, seed=1, progress_bar=False, **SMALL)
    c = _volumes(other)
    assert not np.array_equal(a["site-1/ct1-p000.nii.gz"], c["site-1/ct1-p000.nii.gz"])


def test_stored_orientation_round_trips_to_canonical(ct_cohort: Path) -> None:
    settings = CohortSettings(modality="ct", **SMALL)
    codes = set()
    for site in (1, 2, 3):
        path = ct_cohort / f"site-{site}" / f"ct{site}-p001.nii.gz"
        codes.add("".join(nib.aff2axcodes(nib.load(path).affine)))
        stored, affine, _ = cohort_volume(settings, site, 1)
        canon = nib.as_closest_canonical(nib.Nifti1Image(stored, affine))
        np.testing.assert_allclose(load_volume(path).data, np.asarray(canon.dataobj), atol=0.5)
    assert len(codes) == 3  # the sites store voxels in different orientations


def test_slices_of_a_patient_resemble_each_other_more_than_other_patients(ct_cohort: Path, tmp_path: Path) -> None:
    store = ingest_site(ct_cohort / "site-1", modality="ct", out=tmp_path / "cache", size=48, progress=False)
    x = store.images.reshape(len(store.images), -1).astype(np.float64)
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    same = store.patient_ids[np.argmin(d, axis=1)] == store.patient_ids
    assert same.mean() > 0.9
    assert not set(store.train_patient_ids()) & set(store.test_patient_ids())


def test_sites_are_non_iid(ct_cohort: Path) -> None:
    """The documented scanner knobs differ between sites and do what they say."""
    from fedsynth.data.cohort import site_scanners
    from fedsynth.data.cohort.scanner import apply_ct_scanner

    scanners = site_scanners("ct", 3, seed=0)
    assert json.loads((ct_cohort / "scanners.json").read_text()) == {
        f"site-{k}": s.model_dump() for k, s in enumerate(scanners, start=1)}
    flat = np.full((4, 64, 64), 40.0, np.float32)
    measured = [float(apply_ct_scanner(flat, s, np.random.default_rng(0)).std()) for s in scanners]
    for s, sd in zip(scanners, measured, strict=True):
        assert sd == pytest.approx(s.noise * 1.04, rel=0.1)  # 1.04: noise weight at 40 HU
    assert measured[1] > 2 * measured[0]
    assert len({(s.fov, s.blur_px, s.gain, s.offset, s.orientation) for s in scanners}) == 3


def test_mri_cohort_is_ingestible(tmp_path: Path) -> None:
    make_cohort("mri", sites=2, patients=2, slices=8, size=32, out=tmp_path / "mri", progress_bar=False)
    store = ingest_site(tmp_path / "mri" / "site-2", modality="mri", out=tmp_path / "cache", size=32, progress=False)
    assert store.images.shape[1:] == (32, 32) and len(store.images) >= 8
    assert 0.0 <= store.images.min() and store.images.max() <= 1.0


def test_existing_output(ct_cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Same settings: reused without rewriting.
    before = {p: p.stat().st_mtime_ns for p in ct_cohort.glob("site-*/*.nii.gz")}
    make_cohort("ct", out=ct_cohort, progress_bar=False, **SMALL)
    assert before == {p: p.stat().st_mtime_ns for p in ct_cohort.glob("site-*/*.nii.gz")}
    # Different settings: refused with one line, exit 2.
    code = main(["data", "make-cohort", "--modality", "ct", "--sites", "2", "--patients", "3",
                 "--out", str(ct_cohort), "--slices", "12", "--size", "48"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "exists" in err


@pytest.mark.parametrize("args", [["--patients", "0"], ["--size", "8"], ["--sites", "-1"]])
def test_bad_values_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    base = {"--sites": "2", "--patients": "2", "--size": "32"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    argv = ["data", "make-cohort", "--modality", "ct", "--out", str(tmp_path / "c")]
    for k, v in base.items():
        argv += [k, v]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fedsynth: error:") and "\n" not in err
    assert not (tmp_path / "c").exists()


def test_interrupted_run_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = cohort._save

    def failing(*a: object, **k: object) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(cohort, "_save", failing)
    with pytest.raises(KeyboardInterrupt):
        make_cohort("ct", sites=2, patients=2, slices=4, size=32, out=tmp_path / "c", progress_bar=False)
    assert list(tmp_path.iterdir()) == []


def test_pet_cohort_is_ingestible_and_its_sites_differ_in_counts(tmp_path: Path) -> None:
    assert main(["data", "make-cohort", "--modality", "pet", "--sites", "3", "--patients", "2", "--slices", "8",
                 "--size", "32", "--out", str(tmp_path / "pet")]) == 0
    img = nib.load(next((tmp_path / "pet" / "site-1").glob("*.nii.gz")))
    suv = np.asarray(img.dataobj, dtype=np.float64)  # stored as integers with a slope giving SUV
    assert suv.min() >= 0 and 1.5 < np.percentile(suv[suv > 0.5], 90) < 12
    store = ingest_site(tmp_path / "pet" / "site-2", modality="pet", out=tmp_path / "cache", size=32, progress=False)
    assert store.images.shape[1:] == (32, 32) and 0.0 <= store.images.min() and store.images.max() <= 1.0
    counts = [s.counts for s in cohort.site_scanners("pet", 3, 0)]
    assert counts[1] < counts[2] < counts[0]  # the three documented sites' protocols


def test_pet_noise_falls_as_one_over_root_counts_and_follows_the_activity() -> None:
    from fedsynth.data.cohort.scanner import pet_noise

    yy, xx = np.mgrid[:64, :64]
    disc = ((yy - 31.5) ** 2 + (xx - 31.5) ** 2 < 24**2).astype(np.float64)
    disc += 2.0 * ((yy - 31.5) ** 2 + (xx - 20) ** 2 < 6**2)  # a hot organ
    stack = np.repeat(disc[None], 24, axis=0)
    inner = ((yy - 31.5) ** 2 + (xx - 40) ** 2 < 8**2)
    sd = {c: float(pet_noise(stack, c, np.random.default_rng(0))[:, inner].std()) for c in (1e5, 4e5)}
    assert sd[1e5] / sd[4e5] == pytest.approx(2.0, rel=0.1)  # Poisson: 4x the counts, half the noise
    noise = pet_noise(stack, 1e5, np.random.default_rng(1))
    outside = ((yy - 31.5) ** 2 + (xx - 31.5) ** 2 > 30**2)
    assert noise[:, outside].std() < 0.05 * noise[:, inner].std()  # no streaks leave the body (OSEM-like)
