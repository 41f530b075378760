"""Ingestion: NIfTI → normalised, patient-split, atomically cached slice store."""

from __future__ import annotations

import gzip
import json
import logging
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fixtures.nifti import make_site, write_array, write_ct, write_header_only
from hypothesis import given
from hypothesis import strategies as st

from fedsynth.cli import main
from fedsynth.config import IngestSettings
from fedsynth.data import (
    SliceStore,
    ingest_site,
    load_volume,
    open_store,
    read_image_stack,
    split_patients,
)
from fedsynth.data.ingest import INDEX_FILE
from fedsynth.errors import DataError


def test_load_volume_applies_scaling_to_hu(tmp_path: Path) -> None:
    path = write_ct(tmp_path / "p0.nii.gz", seed=0)
    vol = load_volume(path)
    assert vol.data.dtype == np.float32
    assert vol.data.min() == pytest.approx(-1000.0)
    assert vol.data.max() == pytest.approx(700.0)
    assert vol.spacing == pytest.approx((0.8, 0.8, 2.5))


def test_load_volume_reorients_to_canonical(tmp_path: Path) -> None:
    data = np.zeros((8, 9, 4), np.float32)
    data[0, 0, 0] = 1.0
    flipped = np.diag([-1.0, 1.0, 1.0, 1.0])  # x axis runs right-to-left on disk
    nib.save(nib.Nifti1Image(data, flipped), str(tmp_path / "a.nii"))
    vol = load_volume(tmp_path / "a.nii")
    assert vol.data[-1, 0, 0] == 1.0  # canonical: x increases to the right
    assert np.all(np.diag(vol.affine)[:3] > 0)


def test_ingest_normalises_splits_by_patient_and_caches(tmp_path: Path) -> None:
    site = make_site(tmp_path / "site", n_patients=8)
    store = ingest_site(site, modality="ct", out=tmp_path / "cache", size=32, seed=3, progress=False)
    assert store.images.shape[1:] == (32, 32)
    assert store.images.dtype == np.float32
    assert 0.0 <= store.images.min() and store.images.max() <= 1.0
    train, test = set(store.patients("train")), set(store.patients("test"))
    assert train and test and not (train & test)
    assert len(train) == 6 and len(test) == 2
    assert len(store.train_images()) + len(store.test_images()) == len(store)
    # Each slice keeps its provenance.
    assert set(store.volume_files) == {f"p{i:03d}.nii.gz" for i in range(8)}
    assert store.slice_indices.max() < 6
    # Same inputs and settings -> the same cached store, not a re-ingest.
    again = ingest_site(site, modality="ct", out=tmp_path / "cache", size=32, seed=3, progress=False)
    assert again.path == store.path
    # A different seed gives a different (cached separately) split.
    other = ingest_site(site, modality="ct", out=tmp_path / "cache", size=32, seed=4, progress=False)
    assert other.path != store.path


@pytest.mark.parametrize("seed", range(10))
def test_split_never_shares_patients(seed: int) -> None:
    ids = [f"p{i}" for i in range(2 + seed)] * 3
    assignment = split_patients(ids, 0.7, seed)
    assert set(assignment.values()) == {"train", "test"}
    assert split_patients(ids, 0.7, seed) == assignment


def test_mri_percentile_normalisation(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(3):
        vol = np.zeros((32, 32, 4), np.float32)
        vol[6:26, 6:26] = 300 + 50 * rng.standard_normal((20, 20, 4))
        vol[10, 10, :] = 1e6  # a single outlier must not set the scale
        write_array(tmp_path / "site" / f"m{i}.nii.gz", vol)
    store = ingest_site(tmp_path / "site", modality="mri", out=tmp_path / "c", size=32, progress=False)
    body = store.images[:, 12:20, 12:20]
    assert 0.2 < float(np.median(body)) < 0.9


def test_empty_slices_are_skipped(tmp_path: Path) -> None:
    vol = np.full((40, 40, 6), -1000.0, np.float32)
    vol[10:30, 10:30, 2:4] = 40.0
    for i in range(2):
        write_array(tmp_path / "s" / f"p{i}.nii", vol)
    store = ingest_site(tmp_path / "s", modality="ct", out=tmp_path / "c", size=16, progress=False)
    assert sorted(set(store.slice_indices.tolist())) == [2, 3]


def test_manifest_assigns_patient_ids(tmp_path: Path) -> None:
    site = tmp_path / "site"
    for i in range(4):
        write_ct(site / f"scan{i}.nii.gz", seed=i)
    (tmp_path / "m.csv").write_text("file,patient_id\n" + "".join(f"scan{i}.nii.gz,P{i // 1}\n" for i in range(4)))
    store = ingest_site(site, "ct", tmp_path / "c", size=16, manifest=tmp_path / "m.csv", progress=False)
    assert set(store.patient_ids) == {"P0", "P1", "P2", "P3"}
    (tmp_path / "dup.csv").write_text("file,patient_id\nscan0.nii.gz,A\nscan1.nii.gz,A\nscan2.nii.gz,B\nscan3.nii.gz,C\n")
    with pytest.raises(DataError, match="duplicate patient id 'A'"):
        ingest_site(site, "ct", tmp_path / "c2", size=16, manifest=tmp_path / "dup.csv", progress=False)


def test_four_d_needs_a_frame(tmp_path: Path) -> None:
    data = np.random.default_rng(0).uniform(0, 100, (20, 20, 4, 3)).astype(np.float32)
    for i in range(2):
        write_array(tmp_path / "s" / f"p{i}.nii.gz", data)
    with pytest.raises(DataError, match=r"4-D image with 3 frames; choose one with --frame"):
        ingest_site(tmp_path / "s", "pet", tmp_path / "c", size=16, progress=False)
    store = ingest_site(tmp_path / "s", "pet", tmp_path / "c", progress=False,
                        settings=IngestSettings(size=16, frame=1))
    assert len(store) > 0


# --- the stat index: a repeated ingest reads no volume ------------------------------------------


def _set_mtimes(site: Path, offset_s: float) -> None:
    """Give every volume an mtime ``offset_s`` from now (a fresh volume is always re-hashed)."""
    t = time.time_ns() + int(offset_s * 1e9)
    for p in site.iterdir():
        os.utime(p, ns=(t, t))


def _garble_keeping_stat(vol: Path) -> None:
    """Overwrite ``vol`` with zeros of the same size and restore its mtime: only a read notices."""
    st = vol.stat()
    vol.write_bytes(b"\0" * st.st_size)
    os.utime(vol, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_repeated_ingest_reads_no_volume(tmp_path: Path) -> None:
    site, out = make_site(tmp_path / "site", n_patients=4), tmp_path / "cache"
    _set_mtimes(site, -3600)
    first = ingest_site(site, "ct", out, size=16, progress=False)
    _garble_keeping_stat(site / "p001.nii.gz")
    again = ingest_site(site, "ct", out, size=16, progress=False)  # the garbage is never read
    assert again.path == first.path
    np.testing.assert_array_equal(again.images, first.images)
    # The documented trade-off, and its way out: without the index the content is hashed again.
    (out / INDEX_FILE).unlink()
    with pytest.raises(DataError, match="p001.nii.gz"):
        ingest_site(site, "ct", out, size=16, progress=False)


def test_changed_volume_is_reingested(tmp_path: Path) -> None:
    site, out = make_site(tmp_path / "site", n_patients=4), tmp_path / "cache"
    _set_mtimes(site, -3600)
    first = ingest_site(site, "ct", out, size=16, progress=False)
    write_ct(site / "p001.nii.gz", seed=99)  # new content, new mtime
    again = ingest_site(site, "ct", out, size=16, progress=False)
    assert again.path != first.path and again.meta["key"] != first.meta["key"]

    def slices(store: SliceStore, pid: str) -> np.ndarray:
        return store.images[store.patient_ids == pid]

    assert not np.array_equal(slices(again, "p001"), slices(first, "p001"))
    np.testing.assert_array_equal(slices(again, "p000"), slices(first, "p000"))


def test_volume_modified_just_now_is_hashed_on_every_call(tmp_path: Path) -> None:
    # Within the file system's timestamp granularity a rewrite can keep size and mtime.
    site, out = make_site(tmp_path / "site", n_patients=4), tmp_path / "cache"
    _set_mtimes(site, +60)
    ingest_site(site, "ct", out, size=16, progress=False)
    _garble_keeping_stat(site / "p001.nii.gz")
    with pytest.raises(DataError, match="p001.nii.gz"):
        ingest_site(site, "ct", out, size=16, progress=False)


def _stale(index: Path) -> None:
    obj = json.loads(index.read_text())
    gone = {k: "slices-0123456789abcdef" for k in obj["stores"]}  # a store that does not exist
    index.write_text(json.dumps({**obj, "stores": gone}))


INDEX_DAMAGE: dict[str, Callable[[Path], object]] = {
    "missing": lambda index: index.unlink(),
    "not_json": lambda index: index.write_text("{not json"),
    "foreign": lambda index: index.write_text('{"version": 1, "stores": {"x": "../../etc"}}'),
    "wrong_version": lambda index: index.write_text(json.dumps({"version": 99, "stores": []})),
    "stale_store": _stale,
}


@pytest.mark.parametrize("damage", sorted(INDEX_DAMAGE))
def test_damaged_index_falls_back_to_the_content_key(tmp_path: Path, damage: str) -> None:
    site, out = make_site(tmp_path / "site", n_patients=4), tmp_path / "cache"
    _set_mtimes(site, -3600)
    first = ingest_site(site, "ct", out, size=16, progress=False)
    INDEX_DAMAGE[damage](out / INDEX_FILE)
    again = ingest_site(site, "ct", out, size=16, progress=False)
    assert again.path == first.path  # same content key, same store: nothing re-ingested
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [first.path.name]
    assert json.loads((out / INDEX_FILE).read_text())["stores"]  # and the index is usable again
    _garble_keeping_stat(site / "p001.nii.gz")
    assert ingest_site(site, "ct", out, size=16, progress=False).path == first.path


# --- bad inputs through the CLI: one line, exit 2, nothing written -------------------------------


def _bad_site(tmp_path: Path, kind: str) -> Path:
    site = make_site(tmp_path / "site", n_patients=3)
    bad = site / "zzz.nii.gz"
    if kind == "corrupt_gz":
        bad.write_bytes(b"\x1f\x8b" + os.urandom(200))
    elif kind == "truncated_gz":
        full = write_ct(tmp_path / "full.nii.gz", seed=9, shape=(64, 64, 16)).read_bytes()
        bad.write_bytes(full[: len(full) // 2])
    elif kind == "not_nifti":
        bad = site / "zzz.nii"
        bad.write_text("this is a DICOM folder listing, not NIfTI\n" * 20)
    elif kind == "two_d":
        write_array(bad, np.ones((20, 20), np.float32))
    elif kind == "nan":
        data = np.ones((20, 20, 4), np.float32)
        data[3, 3, 1] = np.nan
        data[4, 4, 2] = np.inf
        write_array(bad, data)
    elif kind == "duplicate":
        write_ct(site / "p000.nii", seed=5)
    elif kind == "huge_header":
        write_header_only(bad, (30000, 30000, 30000))
    elif kind == "huge_4d_header":
        bad = site / "zzz.nii"
        write_header_only(bad, (512, 512, 512, 32), dtype=np.float64)  # 4.3e9 voxels
    elif kind == "wide_dtype_header":
        write_header_only(bad, (1024, 1024, 800), dtype=np.complex128)  # 8.4e8 voxels but 12.5 GiB
    elif kind == "zero_dim_header":
        write_header_only(bad, (64, 0, 16))
    elif kind == "negative_dim_header":
        write_header_only(bad, (64, -64, 16))
    elif kind == "empty":
        site = tmp_path / "empty"
        site.mkdir()
        (site / "notes.txt").write_text("no volumes here")
    return site


BAD = {
    "corrupt_gz": "not a readable NIfTI file",
    "truncated_gz": "truncated or corrupt",
    "not_nifti": "not a readable NIfTI file",
    "two_d": "expected a 3-D volume",
    "nan": "2 voxel(s) are NaN or infinite",
    "duplicate": "duplicate patient id 'p000'",
    "empty": "no NIfTI volumes",
    "huge_header": "header shape (30000, 30000, 30000) is 27,000,000,000,000 voxels, above the bound of "
                   "1,000,000,000 (ingest setting max_voxels)",
    "huge_4d_header": "header shape (512, 512, 512, 32) is 4,294,967,296 voxels, above the bound of 1,000,000,000",
    "wide_dtype_header": "header shape (1024, 1024, 800) of complex128 is 13,421,772,800 bytes of voxel data, "
                         "above the bound of 8,589,934,592 (ingest setting max_bytes)",
    "zero_dim_header": "header shape (64, 0, 16) has a zero or negative dimension",
    "negative_dim_header": "header shape (64, -64, 16) has a zero or negative dimension",
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_input_one_line_exit_2_nothing_written(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    site = _bad_site(tmp_path, kind)
    out = tmp_path / "cache"
    code = main(["data", "ingest", str(site), "--modality", "ct", "--size", "16", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("fedsynth: error: ")
    assert BAD[kind] in err
    if kind not in {"empty", "duplicate"}:
        assert "zzz.nii" in err  # the culprit is named
    assert not out.exists() or not any(out.iterdir())


# --- headers that claim more than any scan: refused on the header, before a voxel is read --------


def test_oversized_header_is_refused_before_reading_voxels(tmp_path: Path) -> None:
    site = make_site(tmp_path / "site", n_patients=3)
    write_header_only(site / "zzz.nii.gz", (30000, 30000, 30000))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"zzz\.nii\.gz: header shape \(30000, 30000, 30000\)") as err:
            ingest_site(site, "ct", tmp_path / "cache", size=16, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "\n" not in str(err.value)
    assert peak < 64 * 2**20  # the claimed 54 TB (or any part of it) was never allocated
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    # Reading a NIfTI directory for the gate goes through the same check.
    with pytest.raises(DataError, match="max_voxels"):
        read_image_stack(site, size=16, modality="ct")


def test_size_bounds_are_settings_and_not_part_of_the_store_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site, out = make_site(tmp_path / "site", n_patients=4), tmp_path / "cache"  # 40 x 40 x 6 int16
    assert IngestSettings().max_voxels == 1_000_000_000 and IngestSettings().max_bytes == 8 * 2**30
    with pytest.raises(DataError, match=r"p000\.nii\.gz: header shape \(40, 40, 6\) is 9,600 voxels, above "
                                        r"the bound of 9,599 \(ingest setting max_voxels\)"):
        ingest_site(site, "ct", out, progress=False, settings=IngestSettings(size=16, max_voxels=9599))
    with pytest.raises(DataError, match=r"of int16 is 19,200 bytes of voxel data, above the bound of 19,199"):
        ingest_site(site, "ct", out, progress=False, settings=IngestSettings(size=16, max_bytes=19199))
    code = main(["data", "ingest", str(site), "--modality", "ct", "--size", "16", "--out", str(out),
                 "--max-voxels", "100"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("fedsynth: error: ") and "above the bound of 100 " in err
    assert len(err.splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())
    # A bound only refuses input: at or above the volumes' size it gives the default's store.
    exact = ingest_site(site, "ct", out, progress=False,
                        settings=IngestSettings(size=16, max_voxels=9600, max_bytes=19200))
    default = ingest_site(site, "ct", tmp_path / "other", size=16, progress=False)
    assert exact.path.name == default.path.name and exact.meta["key"] == default.meta["key"]
    assert "max_voxels" not in exact.meta["settings"]
    np.testing.assert_array_equal(exact.images, default.images)


# --- all-air or empty volumes: left out, and named ------------------------------------------------


def _site_with_air(tmp_path: Path) -> Path:
    site = make_site(tmp_path / "site", n_patients=4)
    write_array(site / "p900.nii.gz", np.full((40, 40, 6), -1000.0, np.float32))  # all air
    write_array(site / "p901.nii", np.full((40, 40, 6), -3000.0, np.float32))  # empty (padding value)
    return site


def test_all_air_volumes_are_named_in_the_store(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    site = _site_with_air(tmp_path)
    with caplog.at_level(logging.WARNING, logger="fedsynth.data.ingest"):
        store = ingest_site(site, "ct", tmp_path / "cache", size=16, progress=False)
    reason = "no slice above body fraction 0.05"
    assert store.meta["skipped_volumes"] == [{"file": "p900.nii.gz", "patient_id": "p900", "reason": reason},
                                             {"file": "p901.nii", "patient_id": "p901", "reason": reason}]
    assert set(store.patients()) == {"p000", "p001", "p002", "p003"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 2 of 6 volume(s)" in warnings[0]
    assert warnings[0].endswith(": p900.nii.gz, p901.nii")
    # The normal volumes' slices are exactly those of a site without the empty ones.
    for extra in ("p900.nii.gz", "p901.nii"):
        (site / extra).unlink()
    clean = ingest_site(site, "ct", tmp_path / "clean", size=16, progress=False)
    assert clean.meta["skipped_volumes"] == []
    for pid in clean.patients():
        np.testing.assert_array_equal(store.images[store.patient_ids == pid], clean.images[clean.patient_ids == pid])
        np.testing.assert_array_equal(store.slice_indices[store.patient_ids == pid],
                                      clean.slice_indices[clean.patient_ids == pid])


def test_cli_ingest_summary_lists_skipped_volumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = _site_with_air(tmp_path)
    argv = ["data", "ingest", str(site), "--modality", "ct", "--size", "16", "--out", str(tmp_path / "c")]
    for _ in range(2):  # the second run is a cache hit: the store still names them
        assert main(argv) == 0
        summary = json.loads(capsys.readouterr().out)
        assert [v["file"] for v in summary["skipped_volumes"]] == ["p900.nii.gz", "p901.nii"]
        assert str(tmp_path) not in json.dumps(summary["skipped_volumes"])  # file names, never paths


def test_site_where_no_volume_passes_is_still_an_error(tmp_path: Path) -> None:
    for i in range(3):
        write_array(tmp_path / "s" / f"p{i}.nii", np.full((20, 20, 4), -1000.0, np.float32))
    with pytest.raises(DataError, match="no slice passed the body-fraction filter"):
        ingest_site(tmp_path / "s", "ct", tmp_path / "c", size=16, progress=False)
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


def test_killed_ingest_leaves_no_partial_store(tmp_path: Path) -> None:
    site = make_site(tmp_path / "site", n_patients=3)
    out = tmp_path / "cache"
    code = (
        "import os, numpy as np\n"
        "import fedsynth.data.store as st\n"
        "orig = np.lib.format.open_memmap\n"
        "def boom(*a, **k):\n"
        "    m = orig(*a, **k); m.flush(); os._exit(9)\n"
        "np.lib.format.open_memmap = boom\n"
        "from fedsynth.data import ingest_site\n"
        f"ingest_site({str(site)!r}, 'ct', {str(out)!r}, size=16, progress=False)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == 9
    leftovers = [p for p in out.iterdir() if not p.name.startswith(".")] if out.exists() else []
    assert leftovers == []
    # A later ingest succeeds and is complete.
    store = ingest_site(site, "ct", out, size=16, progress=False)
    assert open_store(store.path).images.shape[0] == len(store)


def test_cli_ingest_prints_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = make_site(tmp_path / "site", n_patients=4)
    assert main(["data", "ingest", str(site), "--modality", "ct", "--size", "24", "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert '"train_patients": 3' in out and '"test_patients": 1' in out


def test_read_image_stack_formats(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).uniform(0, 1, (5, 16, 16)).astype(np.float32)
    np.save(tmp_path / "a.npy", arr)
    np.savez(tmp_path / "b.npz", images=arr, groups=np.array(list("aabbc")))
    assert np.array_equal(read_image_stack(tmp_path / "a.npy"), arr)
    imgs, groups = read_image_stack(tmp_path / "b.npz", return_groups=True)
    assert imgs.shape == (5, 16, 16) and list(groups) == list("aabbc")
    assert read_image_stack(tmp_path / "a.npy", size=8).shape == (5, 8, 8)
    site = make_site(tmp_path / "site", n_patients=2)
    imgs, groups = read_image_stack(site, size=16, modality="ct", return_groups=True)
    assert imgs.shape[1:] == (16, 16) and set(groups) == {"p000", "p001"}
    np.save(tmp_path / "bad.npy", arr * 3)
    with pytest.raises(DataError, match=r"values must lie in \[0, 1\]"):
        read_image_stack(tmp_path / "bad.npy")
    with pytest.raises(DataError, match="needs --modality"):
        read_image_stack(site)


def test_gz_helper_sanity(tmp_path: Path) -> None:
    # The corrupt-gzip fixture really is not decompressible (guards the test above).
    p = tmp_path / "x.gz"
    p.write_bytes(b"\x1f\x8b" + b"\x00" * 50)
    with pytest.raises(Exception), gzip.open(p) as fh:  # noqa: B017
        fh.read()


@given(n=st.integers(3, 40), train=st.floats(0.05, 0.8), val=st.floats(0.01, 0.3), seed=st.integers(0, 2**16))
def test_three_way_split_is_disjoint_complete_and_never_empty(n: int, train: float, val: float, seed: int) -> None:
    if train + val >= 1.0:
        return
    ids = [f"p{i}" for i in range(n)] * 2
    assignment = split_patients(ids, train, seed, val_fraction=val)
    assert set(assignment) == set(ids)
    assert set(assignment.values()) == {"train", "val", "test"}
    assert split_patients(ids, train, seed, val_fraction=val) == assignment


def test_three_way_split_needs_three_patients() -> None:
    with pytest.raises(DataError, match="at least 3 patients for a train/validation/test split"):
        split_patients(["a", "b"], 0.5, 0, val_fraction=0.2)


def test_ingest_with_validation_patients(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(6):
        vol = np.zeros((16, 16, 3), np.float32)
        vol[3:13, 3:13] = 300.0 + 40 * rng.standard_normal((10, 10, 3))
        write_array(tmp_path / "site" / f"p{i}.nii.gz", vol)
    store = ingest_site(tmp_path / "site", modality="mri", out=tmp_path / "c", size=16, train_fraction=0.5,
                        val_fraction=0.2, progress=False)
    parts = {p: set(store.patient_ids_of(p)) for p in ("train", "val", "test")}
    assert [len(parts[p]) for p in ("train", "val", "test")] == [3, 1, 2]
    assert not (parts["train"] & parts["val"]) and not (parts["val"] & parts["test"])
    assert len(store.val_images()) == 3 * len(parts["val"])
    plain = ingest_site(tmp_path / "site", modality="mri", out=tmp_path / "c", size=16, train_fraction=0.5,
                        progress=False)
    assert plain.path != store.path and len(plain.val_images()) == 0


def test_cli_ingest_with_validation_patients(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = make_site(tmp_path / "site", n_patients=6)
    argv = ["data", "ingest", str(site), "--modality", "ct", "--size", "24", "--out", str(tmp_path / "c"),
            "--train-fraction", "0.5", "--val-fraction", "0.2"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["train_patients"], summary["val_patients"], summary["test_patients"]) == (3, 1, 2)
    assert main([*argv[:-1], "0.6"]) == 2  # train + val must leave test patients
    assert "--val-fraction" in capsys.readouterr().err
