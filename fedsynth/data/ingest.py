"""Site directory of NIfTI volumes → cached, split slice store.

This is the only way site data enters fedsynth. It validates every file
before writing anything, keys the cache by the content of the inputs and the
settings (so a changed scan or window re-ingests), and writes atomically.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from fedsynth.config import IngestSettings, Modality
from fedsynth.data.nifti import is_nifti, load_volume
from fedsynth.data.normalise import normalise_volume
from fedsynth.data.slices import axial_slices
from fedsynth.data.split import split_patients
from fedsynth.data.store import SliceStore, open_store, write_store
from fedsynth.errors import DataError
from fedsynth.progress import progress as progress_bar

__all__ = ["discover_volumes", "ingest_site", "patient_id_from_name"]

log = logging.getLogger(__name__)


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


def _cache_key(pairs: list[tuple[Path, str]], modality: str, settings: IngestSettings,
               train_fraction: float, seed: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"modality": modality, "settings": settings.model_dump(mode="json"),
                         "train_fraction": train_fraction, "seed": seed, "v": 1}, sort_keys=True).encode())
    for path, pid in pairs:
        h.update(f"{path.name}\0{pid}\0".encode())
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


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
) -> SliceStore:
    """Ingest every volume of ``site_dir`` into a slice store under ``out``.

    ``size`` overrides ``settings.size``. Returns the cached store when one
    with the same key exists. Raises :class:`DataError` (nothing written) on
    any bad input.
    """
    settings = settings or IngestSettings()
    if size is not None:
        settings = settings.model_copy(update={"size": size})
        IngestSettings.model_validate(settings.model_dump())  # re-check the bound
    if modality not in ("ct", "mri", "pet"):
        raise DataError(f"unknown modality {modality!r}; expected ct, mri or pet")
    if not 0.0 < train_fraction < 1.0:
        raise DataError(f"train fraction must be in (0, 1), got {train_fraction}")
    site_dir = Path(site_dir)
    pairs = discover_volumes(site_dir, manifest)
    key = _cache_key(pairs, modality, settings, train_fraction, seed)
    store_path = Path(out) / f"slices-{key[:16]}"
    if store_path.exists():
        try:
            store = open_store(store_path)
            log.info("slice store cache hit: %s (%d slices)", store_path, len(store))
            return store
        except DataError:
            log.warning("rebuilding unreadable slice store %s", store_path)
    assignment = split_patients([pid for _, pid in pairs], train_fraction, seed)
    chunks: list[np.ndarray] = []
    pids: list[str] = []
    files: list[str] = []
    zs: list[int] = []
    for path, pid in progress_bar(pairs, enabled=progress, desc=f"ingest {site_dir.name}", unit="vol"):
        vol = load_volume(path, frame=settings.frame)
        unit = normalise_volume(vol.data, modality, settings, source=path)
        slices, z = axial_slices(unit, settings.size, settings.body_fraction)
        if slices.shape[0] == 0:
            log.warning("%s: no slice above body fraction %.2f; skipped", path, settings.body_fraction)
            continue
        chunks.append(slices)
        pids += [pid] * len(z)
        files += [path.name] * len(z)
        zs += [int(i) for i in z]
    if not chunks:
        raise DataError(f"{site_dir}: no slice passed the body-fraction filter ({settings.body_fraction})")
    images = np.concatenate(chunks, axis=0)
    split = [assignment[p] for p in pids]
    if "train" not in split or "test" not in split:
        raise DataError(f"{site_dir}: after filtering, one side of the train/test split is empty")
    meta = {
        "site_dir": site_dir.name,
        "modality": modality,
        "settings": settings.model_dump(mode="json"),
        "train_fraction": train_fraction,
        "seed": seed,
        "key": key,
        "n_volumes": len(pairs),
    }
    store = write_store(store_path, images, pids, files, zs, split, meta)
    log.info("ingested %d slices from %d volumes into %s", len(store), len(pairs), store_path)
    return store
