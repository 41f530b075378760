"""``fedsynth data ...``: make the bundled cohort, ingest a site directory."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``data`` command group."""
    data = sub.add_parser("data", help="ingest NIfTI volumes; make the bundled cohort",
                          description="Site data: ingestion into a slice store and the bundled cohort.")
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    ing = dsub.add_parser(
        "ingest", help="NIfTI directory -> cached, patient-split slice store",
        description="Read every .nii/.nii.gz volume of SITE_DIR (one per patient), normalise, cut "
        "axial slices, split by patient and write a cached slice store under CACHE_DIR. The summary "
        "lists skipped_volumes: volumes with no slice above the body fraction (all air, empty).",
    )
    ing.add_argument("site_dir", type=Path, metavar="SITE_DIR", nargs="?",
                     help="directory of NIfTI volumes (or use --config)")
    ing.add_argument("--config", type=Path, help="site TOML ([site] table: id, modality, data_dir, workdir, ...)")
    ing.add_argument("--modality", choices=["ct", "mri", "pet"])
    ing.add_argument("--size", type=int, help="slice edge length in pixels (default 128)")
    ing.add_argument("--out", type=Path, metavar="CACHE_DIR", help="cache directory (default: <workdir>/cache with --config)")
    ing.add_argument("--train-fraction", type=float, help="share of patients for training (default 0.75)")
    ing.add_argument("--val-fraction", type=float,
                     help="share of patients for validation (default 0, or the site TOML's val_fraction)")
    ing.add_argument("--seed", type=int, help="split seed (default 0)")
    ing.add_argument("--manifest", type=Path, help="CSV with columns file,patient_id")
    ing.add_argument("--body-fraction", type=float, help="skip slices with less body than this (default 0.05)")
    ing.add_argument("--frame", type=int, help="for 4-D volumes: the frame to use")
    ing.add_argument("--hu-window", type=float, nargs=2, metavar=("LOW", "HIGH"), help="CT window in HU (default -1000 1000)")
    ing.add_argument("--percentiles", type=float, nargs=2, metavar=("LOW", "HIGH"), help="MRI/PET percentiles (default 0.5 99.5)")
    ing.add_argument("--max-voxels", type=int, metavar="N",
                     help="refuse a volume whose header claims more voxels (default 1e9; checked before reading)")
    ing.add_argument("--max-bytes", type=int, metavar="N",
                     help="refuse a volume with more voxel data as stored (default 8 GiB = 8589934592)")
    ing.set_defaults(func=_ingest)

    mk = dsub.add_parser(
        "make-cohort", help="write the bundled multi-site cohort of digital patients",
        description="Generate realistic digital patients (CT torso or MRI brain), one NIfTI volume per "
        "patient, as DIR/site-K/<patient_id>.nii.gz; sites differ (non-IID) by scanner and patient mix.",
    )
    mk.add_argument("--modality", choices=["ct", "mri", "pet"], required=True)
    mk.add_argument("--sites", type=int, required=True)
    mk.add_argument("--patients", type=int, required=True, help="patients per site")
    mk.add_argument("--out", type=Path, required=True, metavar="DIR")
    mk.add_argument("--slices", type=int, default=32, help="axial slices per volume (default 32)")
    mk.add_argument("--size", type=int, default=128, help="in-plane size (default 128)")
    mk.add_argument("--seed", type=int, default=0)
    mk.set_defaults(func=_make_cohort)


def _ingest(args: argparse.Namespace) -> int:
    from fedsynth.config import IngestSettings, SiteConfig, load_toml, validate
    from fedsynth.data.ingest import ingest_site
    from fedsynth.errors import ConfigError

    overrides = {k: v for k, v in {
        "body_fraction": args.body_fraction, "frame": args.frame,
        "hu_window": args.hu_window, "percentiles": args.percentiles,
        "max_voxels": args.max_voxels, "max_bytes": args.max_bytes,
    }.items() if v is not None}
    if args.config is not None:
        site = load_toml(args.config, SiteConfig, table="site")
        base = args.config.parent
        site_dir = args.site_dir or (site.data_dir if site.data_dir.is_absolute() else base / site.data_dir)
        workdir = site.workdir if site.workdir.is_absolute() else base / site.workdir
        modality = args.modality or site.modality
        size = args.size or site.image_size
        train_fraction = args.train_fraction if args.train_fraction is not None else site.train_fraction
        val_fraction = args.val_fraction if args.val_fraction is not None else site.val_fraction
        seed = args.seed if args.seed is not None else site.seed
        manifest = args.manifest or site.manifest
        settings = validate(IngestSettings, {**site.ingest.model_dump(), **overrides, "size": size}, "command line")
        out = args.out or workdir / "cache"
    else:
        if args.site_dir is None or args.modality is None or args.out is None:
            raise ConfigError("data ingest needs SITE_DIR, --modality and --out (or --config SITE.toml)")
        site_dir, modality, out, manifest = args.site_dir, args.modality, args.out, args.manifest
        train_fraction = 0.75 if args.train_fraction is None else args.train_fraction
        val_fraction = 0.0 if args.val_fraction is None else args.val_fraction
        seed = 0 if args.seed is None else args.seed
        settings = validate(IngestSettings, {**overrides, "size": args.size or 128}, "command line")
    if not 0.0 < train_fraction < 1.0:
        raise ConfigError(f"--train-fraction must be in (0, 1), got {train_fraction}")
    if not 0.0 <= val_fraction < 1.0 or train_fraction + val_fraction >= 1.0:
        raise ConfigError(f"--val-fraction must be in [0, 1) with train + val < 1, got {val_fraction}")
    store = ingest_site(site_dir, modality=modality, out=out, train_fraction=train_fraction,
                        seed=seed, manifest=manifest, settings=settings, val_fraction=val_fraction)
    summary = {
        "store": str(store.path),
        "slices": len(store),
        "size": list(store.images.shape[1:]),
        "train_slices": int((store.split == "train").sum()),
        "val_slices": int((store.split == "val").sum()),
        "test_slices": int((store.split == "test").sum()),
        "train_patients": len(store.patients("train")),
        "val_patients": len(store.patients("val")),
        "test_patients": len(store.patients("test")),
        # Volumes that gave no slice (all air, empty); absent from stores made before this was recorded.
        "skipped_volumes": store.meta.get("skipped_volumes", []),
    }
    print(json.dumps(summary, indent=2))
    return 0


def _make_cohort(args: argparse.Namespace) -> int:
    from fedsynth.data.cohort import make_cohort

    paths = make_cohort(modality=args.modality, sites=args.sites, patients=args.patients,
                        out=args.out, slices=args.slices, size=args.size, seed=args.seed)
    print(f"wrote {len(paths)} volumes under {args.out}")
    return 0
