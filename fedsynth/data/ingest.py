"""Site directory of NIfTI volumes → cached, split slice store.

This is the only way site data enters fedsynth. It validates every file
before writing anything, keys the cache by the content of the inputs and the
settings (so a changed scan or window re-ingests), and writes atomically.

Hashing every volume is the expensive part of a cache hit, and a site opens
its store at the start of every federated run and every ``fedsynth site``
command; so ``out/ingest-index.json`` remembers which store the same files
had last time, recognised by name, size and modification time (see
:func:`ingest_site`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedsynth.config import IngestSettings, Modality, SiteConfig
from fedsynth.data.nifti import is_nifti, load_volume
from fedsynth.data.normalise import normalise_volume
from fedsynth.data.slices import axial_pixel_mm, axial_slices
from fedsynth.data.split import split_patients
from fedsynth.data.store import SliceStore, open_store, write_store
from fedsynth.digests import update_from_file
from fedsynth.errors import DataError
from fedsynth.io_utils import write_json_atomic
from fedsynth.progress import progress as progress_bar

__all__ = ["INDEX_FILE", "discover_volumes", "ingest_configured_site", "ingest_site", "patient_id_from_name"]

log = logging.getLogger(__name__)

#: File in ``out`` mapping a stat key (names, sizes, mtimes, settings) to the store it last gave.
INDEX_FILE = "ingest-index.json"
_INDEX_VERSION = 1
_INDEX_ENTRIES = 64  # most recent stat keys kept; older ones only cost a content hash
#: A volume modified less than this long before it is looked at is re-hashed on the next call too:
#: a rewrite within the file system's timestamp granularity (2 s on FAT) could keep size and mtime.
_RACY_NS = 2_000_000_000
_STORE_NAME = re.compile(r"slices-[0-9a-f]{16}")
#: IngestSettings fields that only refuse input (see :func:`_store_settings`).
_INPUT_BOUNDS = frozenset({"max_voxels", "max_bytes"})


def patient_id_from_name(path: Path) -> str:
    """``p001.nii.gz`` → ``p001``."""
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _read_manifest(manifest: Path, site_dir: Path) -> dict[str, str]:
    try:
        with open(manifest, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not {"file", "patient_id"} <= set(reader.fieldnames):
                raise DataError(f"{manifest}: manifest needs a header with columns 'file,patient_id'")
            mapping: dict[str, str] = {}
            for row_no, row in enumerate(reader, start=2):
                name, pid = (row.get("file") or "").strip(), (row.get("patient_id") or "").strip()
                if not name or not pid:
                    raise DataError(f"{manifest}: line {row_no}: empty 'file' or 'patient_id'")
                if name in mapping:
                    raise DataError(f"{manifest}: line {row_no}: file {name!r} listed twice")
                if not (site_dir / name).is_file():
                    raise DataError(f"{manifest}: line {row_no}: file {name!r} not found in {site_dir}")
                mapping[name] = pid
    except FileNotFoundError:
        raise DataError(f"{manifest}: no such manifest file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{manifest}: unreadable manifest ({err})") from None
    return mapping


def discover_volumes(site_dir: str | Path, manifest: str | Path | None = None) -> list[tuple[Path, str]]:
    """List ``(volume_path, patient_id)`` for a site directory, sorted by file name.

    Patient ids come from the file names, or from a manifest CSV
    (``file,patient_id``). Two volumes with the same patient id are an error:
    one patient per volume keeps the split and the gate's calibration honest.
    """
    site_dir = Path(site_dir)
    if not site_dir.is_dir():
        raise DataError(f"{site_dir}: not a directory")
    files = sorted(p for p in site_dir.iterdir() if p.is_file() and is_nifti(p))
    if manifest is not None:
        mapping = _read_manifest(Path(manifest), site_dir)
        listed = [(site_dir / name, pid) for name, pid in sorted(mapping.items())]
        unlisted = [p.name for p in files if p.name not in mapping]
        if unlisted:
            raise DataError(f"{manifest}: volume {unlisted[0]!r} in {site_dir} is not in the manifest")
        pairs = listed
    else:
        pairs = [(p, patient_id_from_name(p)) for p in files]
    if not pairs:
        raise DataError(f"{site_dir}: no NIfTI volumes (.nii, .nii.gz) found")
    seen: dict[str, Path] = {}
    for path, pid in pairs:
        if pid in seen:
            raise DataError(f"{path}: duplicate patient id {pid!r} (also {seen[pid].name})")
        seen[pid] = path
    return pairs


def _store_settings(settings: IngestSettings) -> dict[str, Any]:
    """The settings that shape a store's slices: all but the input bounds.

    ``max_voxels``/``max_bytes`` only refuse input and never change a slice;
    keeping them out of the key means raising a bound reuses the existing
    store (and the keys of stores made before the bounds existed still hold).
    """
    return settings.model_dump(mode="json", exclude=_INPUT_BOUNDS)


def _settings_json(
    modality: str, settings: IngestSettings, train_fraction: float, seed: int, val_fraction: float = 0.0,
    fold: int = 0,
) -> bytes:
    """What both keys start from: everything besides the volumes that shapes the store."""
    obj = {"modality": modality, "settings": _store_settings(settings),
           "train_fraction": train_fraction, "seed": seed, "v": 2}
    if val_fraction:  # absent when 0, so stores made before validation splits keep their keys
        obj["val_fraction"] = val_fraction
    if fold:  # likewise: fold 0 is the split every earlier store has
        obj["fold"] = fold
    return json.dumps(obj, sort_keys=True).encode()


def _cache_key(pairs: list[tuple[Path, str]], settings_json: bytes) -> str:
    """The store's key: settings plus each volume's name, patient id and bytes (reads them all)."""
    h = hashlib.sha256(settings_json)
    for path, pid in pairs:
        h.update(f"{path.name}\0{pid}\0".encode())
        update_from_file(h, path)
    return h.hexdigest()


def _stat_key(
    site_dir: Path, pairs: list[tuple[Path, str]], settings_json: bytes
) -> tuple[str, bool]:
    """``(key, trusted)``: settings, site and each volume's name, patient id, size, mtime.

    Reads no volume, only their metadata.

    ``trusted`` is False when a volume's mtime is not safely in the past
    (within :data:`_RACY_NS` of now, or in the future): such a key is not
    recorded, so the next call hashes the content again.
    """
    h = hashlib.sha256(settings_json)
    h.update(f"{site_dir.resolve()}\0".encode())
    now, trusted = time.time_ns(), True
    for path, pid in pairs:
        st = path.stat()
        h.update(f"{path.name}\0{pid}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        trusted = trusted and st.st_mtime_ns < now - _RACY_NS
    return h.hexdigest(), trusted


def _read_index(out: Path) -> dict[str, str]:
    """Stat key -> store directory name; a missing, unreadable or foreign index is an empty one."""
    try:
        obj: Any = json.loads((out / INDEX_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(obj, dict) or obj.get("version") != _INDEX_VERSION:
        return {}
    stores = obj.get("stores")
    if not isinstance(stores, dict):
        return {}
    return {k: v for k, v in stores.items() if isinstance(v, str) and _STORE_NAME.fullmatch(v)}


def _record(out: Path, stat_key: str, store_path: Path) -> None:
    """Remember that ``stat_key`` gave ``store_path`` (entries of deleted stores are dropped)."""
    stores = {k: v for k, v in _read_index(out).items() if k != stat_key and (out / v).is_dir()}
    stores[stat_key] = store_path.name
    recent = dict(list(stores.items())[-_INDEX_ENTRIES:])
    try:
        write_json_atomic(out / INDEX_FILE, {"version": _INDEX_VERSION, "stores": recent})
    except OSError as err:  # the index only saves time; a read-only cache still works
        log.warning("could not update %s (%s)", out / INDEX_FILE, err)


def _open_cached(store_path: Path, how: str) -> SliceStore | None:
    """The store at ``store_path`` if it exists and opens, else None (it will be rebuilt)."""
    if not store_path.exists():
        return None
    try:
        store = open_store(store_path)
    except DataError:
        log.warning("slice store %s is unreadable; not using it", store_path)
        return None
    log.info("slice store cache hit (%s): %s (%d slices)", how, store_path, len(store))
    return store


def ingest_site(
    site_dir: str | Path,
    modality: Modality,
    out: str | Path,
    size: int | None = None,
    train_fraction: float = 0.75,
    seed: int = 0,
    manifest: str | Path | None = None,
    settings: IngestSettings | None = None,
    progress: bool = True,
    val_fraction: float = 0.0,
    fold: int = 0,
) -> SliceStore:
    """Ingest every volume of ``site_dir`` into a slice store under ``out``.

    ``size`` overrides ``settings.size``. Patients are split into train /
    validation / test (:func:`~fedsynth.data.split.split_patients`; ``fold``: which
    disjoint re-split). Returns the cached store when one
    with the same key exists. Raises :class:`DataError` (nothing written) on
    any bad input, including a header larger than ``settings.max_voxels`` /
    ``settings.max_bytes`` (checked before its voxels are read). A volume with
    no slice above ``settings.body_fraction`` (all air, empty) is left out and
    listed in ``store.meta["skipped_volumes"]`` (file name, patient id, reason).

    The store's key hashes the settings and the bytes of every volume. To
    avoid reading every volume on every call, ``out/ingest-index.json`` maps
    a cheap stat key (the settings, the site directory, and per volume its
    name, patient id, size and mtime in ns) to the store it gave last time;
    if the key is known and that store opens, it is returned without reading
    any volume. The trade-off is the one of make and rsync: a volume
    rewritten in place with the same size *and* the same mtime (e.g. restored
    with ``touch -r``) is not noticed; delete the index (or the store) to
    force a content check. Volumes modified in the last 2 s are not trusted
    by their stat. A missing or corrupt index only costs the content hash.
    """
    settings = settings or IngestSettings()
    if size is not None:
        settings = settings.model_copy(update={"size": size})
        IngestSettings.model_validate(settings.model_dump())  # re-check the bound
    if modality not in ("ct", "mri", "pet"):
        raise DataError(f"unknown modality {modality!r}; expected ct, mri or pet")
    if not 0.0 < train_fraction < 1.0:
        raise DataError(f"train fraction must be in (0, 1), got {train_fraction}")
    site_dir, out = Path(site_dir), Path(out)
    pairs = discover_volumes(site_dir, manifest)
    if not 0.0 <= val_fraction < 1.0 or train_fraction + val_fraction >= 1.0:
        raise DataError(f"train fraction {train_fraction} + validation fraction {val_fraction} must be < 1")
    settings_json = _settings_json(modality, settings, train_fraction, seed, val_fraction, fold)
    stat_key, trusted = _stat_key(site_dir, pairs, settings_json)  # before the content is read
    known = _read_index(out).get(stat_key)
    if known is not None and (store := _open_cached(out / known, "unchanged files")) is not None:
        return store
    key = _cache_key(pairs, settings_json)
    store_path = out / f"slices-{key[:16]}"
    if (store := _open_cached(store_path, "same content")) is not None:
        if trusted:
            _record(out, stat_key, store_path)
        return store
    assignment = split_patients([pid for _, pid in pairs], train_fraction, seed, val_fraction, fold)
    chunks: list[np.ndarray] = []
    pids: list[str] = []
    files: list[str] = []
    zs: list[int] = []
    pixel_mm: list[float] = []
    skipped: list[dict[str, str]] = []  # volumes that gave no slice (all air, empty)
    for path, pid in progress_bar(pairs, enabled=progress, desc=f"ingest {site_dir.name}", unit="vol"):
        vol = load_volume(path, frame=settings.frame, max_voxels=settings.max_voxels,
                          max_bytes=settings.max_bytes)
        unit = normalise_volume(vol.data, modality, settings, source=path)
        slices, z = axial_slices(unit, settings.size, settings.body_fraction)
        if slices.shape[0] == 0:
            skipped.append({"file": path.name, "patient_id": pid,
                            "reason": f"no slice above body fraction {settings.body_fraction:g}"})
            continue
        sx, sy = vol.spacing[0], vol.spacing[1]
        if abs(sx / sy - 1.0) > 0.02:
            log.warning("%s: in-plane voxels are %.3g x %.3g mm; slices are resized without physical "
                        "resampling and their pixel size is the geometric mean", path.name, sx, sy)
        chunks.append(slices)
        pixel_mm += [axial_pixel_mm(unit.shape[:2], (sx, sy), settings.size)] * len(z)
        pids += [pid] * len(z)
        files += [path.name] * len(z)
        zs += [int(i) for i in z]
    if skipped:
        log.warning("%s: skipped %d of %d volume(s) with no slice above body fraction %g: %s", site_dir,
                    len(skipped), len(pairs), settings.body_fraction, ", ".join(s["file"] for s in skipped))
    if not chunks:
        raise DataError(f"{site_dir}: no slice passed the body-fraction filter ({settings.body_fraction})")
    images = np.concatenate(chunks, axis=0)
    split = [assignment[p] for p in pids]
    if "train" not in split or "test" not in split or (val_fraction > 0 and "val" not in split):
        raise DataError(f"{site_dir}: after filtering, a part of the train/validation/test split is empty")
    meta = {
        "site_dir": site_dir.name,
        "modality": modality,
        "settings": _store_settings(settings),
        "train_fraction": train_fraction,
        "val_fraction": val_fraction,
        "seed": seed,
        "fold": fold,
        "key": key,
        "n_volumes": len(pairs),
        # File names only (no paths); patient ids are site-local, like the rest of the store.
        "skipped_volumes": skipped,
    }
    store = write_store(store_path, images, pids, files, zs, split, meta, pixel_mm)
    log.info("ingested %d slices from %d volumes into %s", len(store), len(pairs), store_path)
    if trusted:
        _record(out, stat_key, store_path)
    return store


def ingest_configured_site(site: SiteConfig, progress: bool = False) -> SliceStore:
    """The slice store of a configured site, cached under ``<workdir>/slices``.

    The one place that maps a :class:`~fedsynth.config.SiteConfig` to its
    store, so the site daemon and a simulation's centralised upper bound
    open the very same slices.
    """
    return ingest_site(site.data_dir, site.modality, out=Path(site.workdir) / "slices", size=site.image_size,
                       train_fraction=site.train_fraction, seed=site.seed, manifest=site.manifest,
                       settings=site.ingest, progress=progress, val_fraction=site.val_fraction, fold=site.fold)
