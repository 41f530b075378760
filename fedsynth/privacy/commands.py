"""``fedsynth gate | verify | keygen | audit``: the privacy gate as stand-alone tools."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["EXIT_NOTHING_ACCEPTED", "default_audit_path", "register"]

#: ``fedsynth gate`` exit status when no candidate passed: not an error (2), but nothing to publish,
#: and a script that publishes on status 0 must not ship an empty set.
EXIT_NOTHING_ACCEPTED = 3


def default_audit_path(out: Path) -> Path:
    """``<OUT>.audit.json`` beside the output directory: local, never inside what is published."""
    out = Path(os.path.abspath(out))
    return out.with_name(f"{out.name}.audit.json")


def register(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser(
        "gate", help="filter synthetic images through the privacy gate and write a certificate",
        description="Keep only synthetic images whose nearest real image is at least the threshold away in every "
        "metric (exact search); write the publishable OUT/accepted.npy (also linked as OUT/images.npy) and "
        "OUT/certificate.json (signed with --key), and the local audit (nearest reference indices and "
        "patient ids: never publish it) to --audit, outside OUT.",
        epilog=f"exit status: 0 some candidates accepted; 2 bad input (nothing written); "
        f"{EXIT_NOTHING_ACCEPTED} no candidate accepted (OUT holds an empty accepted.npy and the "
        "certificate with every distance; nothing to publish).")
    g.add_argument("--real", "--references", dest="real", type=Path, required=True, metavar="PATH",
                   help="real training images: a slice store directory, .npy/.npz (groups = patient ids) "
                        "or a NIfTI directory")
    g.add_argument("--synthetic", "--candidates", dest="synthetic", type=Path, required=True, metavar="PATH",
                   help="candidates: .npy, .npz or NIfTI dir")
    g.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory (must not exist)")
    g.add_argument("--audit", type=Path, metavar="PATH",
                   help="where to write the local audit JSON (patient ids, reference indices: never publish "
                        "it); must be outside OUT and not exist (default: <OUT>.audit.json beside OUT)")
    g.add_argument("--threshold-rmse", type=float, metavar="X", help="absolute pixel-RMSE threshold")
    g.add_argument("--threshold-ncc", type=float, metavar="X", help="absolute ncc_robust threshold")
    g.add_argument("--calibrate-percentile", type=float, metavar="P",
                   help="calibrate thresholds as the P-th percentile of other-patient nearest distances "
                        "(default mode, P=5); given thresholds then act as floors")
    g.add_argument("--metrics", nargs="+", metavar="M", help="pixel_rmse ncc_robust learned_copy random_vgg_rmse")
    g.add_argument("--copy-detector", type=Path, metavar="PT", dest="copy_detector",
                   help="learned_copy: the site's copy detector checkpoint (fedsynth.privacy.copy_detector)")
    g.add_argument("--holdout", type=Path, metavar="PATH",
                   help="learned_copy: slices of patients not in --real (e.g. validation patients), on which "
                        "its threshold is calibrated (.npy/.npz, a NIfTI dir, or a slice store: its val part)")
    g.add_argument("--config", type=Path, metavar="TOML", help="gate settings ([gate] table or top level)")
    g.add_argument("--key", type=Path, metavar="PEM", help="site Ed25519 private key: sign the certificate")
    g.add_argument("--modality", choices=["ct", "mri", "pet"], help="needed for NIfTI directories")
    g.add_argument("--size", type=int, help="resize both sets to SIZE x SIZE")
    g.add_argument("--search", choices=["pruned", "flat"],
                   help="exact search strategy: pruned (default; provable bounds + exact re-check) or flat "
                        "(exhaustive faiss); same answer")
    g.set_defaults(func=_gate)

    v = sub.add_parser("verify", help="verify a signed certificate against images and a site public key",
                       description="Exit 0 if the signature, the image digests and the certificate's internal "
                       "consistency all check out; otherwise a one-line reason and exit 2.")
    v.add_argument("--certificate", type=Path, required=True)
    v.add_argument("--images", type=Path, required=True, help="the published .npy stack")
    v.add_argument("--public-key", type=Path, required=True)
    v.set_defaults(func=_verify)

    k = sub.add_parser("keygen", help="create a site's Ed25519 certificate-signing key pair",
                       description="Writes DIR/site.key (private, mode 0600, stays at the site) and DIR/site.pub "
                       "(give it to the coordinator).")
    k.add_argument("--out", type=Path, required=True, metavar="DIR")
    k.add_argument("--force", action="store_true", help="overwrite an existing key")
    k.set_defaults(func=_keygen)

    a = sub.add_parser("audit", help="memorisation / membership-inference audit of a synthetic set",
                       description="Nearest distances synthetic→train vs held-out→train, share flagged as copies, "
                       "and a distance-based membership-inference AUC; writes OUT/audit.json and OUT/audit.png.")
    a.add_argument("--synthetic", type=Path, required=True, metavar="PATH")
    a.add_argument("--store", type=Path, required=True, metavar="DIR", help="the site's slice store (train + test)")
    a.add_argument("--out", type=Path, required=True, metavar="DIR")
    a.add_argument("--config", type=Path, metavar="TOML")
    a.set_defaults(func=_audit)


def _config(args: argparse.Namespace) -> Any:
    from fedsynth.config import load_toml, validate
    from fedsynth.privacy.config import GateConfig

    base: dict[str, Any] = {}
    if getattr(args, "config", None):
        import tomllib

        try:
            data = tomllib.loads(Path(args.config).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as err:
            from fedsynth.errors import ConfigError

            raise ConfigError(f"{args.config}: {err}") from None
        table = "gate" if "gate" in data else None
        base = load_toml(args.config, GateConfig, table).model_dump()
    th = {m: v for m, v in (("pixel_rmse", getattr(args, "threshold_rmse", None)),
                            ("ncc_robust", getattr(args, "threshold_ncc", None))) if v is not None}
    if th:
        base["thresholds"] = {**base.get("thresholds", {}), **th}
        if getattr(args, "calibrate_percentile", None) is None:
            base["mode"] = "absolute"
    if getattr(args, "calibrate_percentile", None) is not None:
        base["mode"], base["percentile"] = "calibrated", args.calibrate_percentile
    if getattr(args, "metrics", None):
        base["metrics"] = args.metrics
    if getattr(args, "size", None):
        base["image_size"] = args.size
    if getattr(args, "search", None):
        base["search"] = args.search
    return validate(GateConfig, base, "gate settings")


def _read_real(path: Path, modality: str | None, size: int | None) -> tuple[Any, Any]:
    from fedsynth.data import open_store, read_image_stack

    if path.is_dir() and (path / "index.json").exists():
        store = open_store(path)
        return store.train_images(), store.train_patient_ids()
    return read_image_stack(path, size=size, modality=modality, return_groups=True)


def _read_holdout(path: Path, modality: str | None, size: int | None) -> Any:
    from fedsynth.data import open_store, read_image_stack

    if path.is_dir() and (path / "index.json").exists():
        return open_store(path).val_images()
    return read_image_stack(path, size=size, modality=modality)


def _gate(args: argparse.Namespace) -> int:
    import numpy as np

    from fedsynth.data import read_image_stack
    from fedsynth.errors import ConfigError
    from fedsynth.io_utils import atomic_dir, write_json_atomic
    from fedsynth.privacy import PrivacyGate, load_private_key, sign_certificate

    cfg = _config(args)
    if args.out.exists() and any(args.out.iterdir()):
        raise ConfigError(f"{args.out}: exists and is not empty; choose a new --out")
    audit_path = args.audit if args.audit is not None else default_audit_path(args.out)
    if audit_path.resolve().is_relative_to(args.out.resolve()):
        raise ConfigError(f"--audit {audit_path}: inside the output directory {args.out}, which is published; "
                          "put the audit elsewhere")
    if audit_path.exists():
        raise ConfigError(f"{audit_path}: audit file exists; choose a new --audit or remove it")
    key = load_private_key(args.key) if args.key else None
    real, groups = _read_real(args.real, args.modality, args.size)
    cands = read_image_stack(args.synthetic, size=args.size, modality=args.modality)
    detector = holdout = None
    if "learned_copy" in cfg.metrics:
        if args.copy_detector is None or args.holdout is None:
            raise ConfigError("metric learned_copy needs --copy-detector and --holdout")
        from fedsynth.privacy.copy_detector import CopyDetector

        detector = CopyDetector.load(args.copy_detector)
        holdout = _read_holdout(args.holdout, args.modality, args.size)
    gate = PrivacyGate(real, cfg, reference_groups=groups, detector=detector, holdout=holdout)
    pos = {"i": 0}

    def source(n: int) -> np.ndarray:
        batch = cands[pos["i"] : pos["i"] + n]
        pos["i"] += len(batch)
        return batch

    res = gate.run(source, quota=len(cands), max_attempts=len(cands), show_progress=True)
    signed = (sign_certificate(res.certificate, key).model_dump(mode="json") if key
              else {"certificate": res.certificate.body(), "signature": None})
    with atomic_dir(args.out) as tmp:  # OUT holds only what may be published
        with open(tmp / "accepted.npy", "wb") as fh:
            np.save(fh, res.accepted, allow_pickle=False)
        os.link(tmp / "accepted.npy", tmp / "images.npy")  # same file under the name sites publish
        write_json_atomic(tmp / "certificate.json", signed)
        # Last, before OUT is renamed into place: if the audit cannot be written nothing is published,
        # so a published set always has its audit.
        write_json_atomic(audit_path, res.audit)
    th = ", ".join(f"{m} >= {t:.4g}" for m, t in gate.thresholds.items())
    print(f"accepted {len(res.accepted)} of {res.n_candidates} candidates ({th}); "
          f"wrote {args.out}/accepted.npy and certificate.json{' (signed)' if key else ' (unsigned: no --key)'}; "
          f"local audit (never publish): {audit_path}")
    if len(res.accepted) == 0:
        print(f"fedsynth: gate accepted no candidate ({res.n_candidates} evaluated); nothing to publish",
              file=sys.stderr)
        return EXIT_NOTHING_ACCEPTED
    return 0


def _verify(args: argparse.Namespace) -> int:
    from fedsynth.data import read_image_stack
    from fedsynth.errors import GateError
    from fedsynth.privacy import load_public_key, verify_certificate

    try:
        signed = json.loads(args.certificate.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise GateError(f"{args.certificate}: not a readable JSON certificate ({type(err).__name__})") from None
    images = read_image_stack(args.images)
    cert = verify_certificate(signed, load_public_key(args.public_key), images)
    print(f"OK: {len(images)} images, signature and digests verified; thresholds "
          + ", ".join(f"{m} >= {t:.4g}" for m, t in cert.thresholds().items()))
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from fedsynth.privacy import generate_site_key

    priv, pub = generate_site_key(args.out, overwrite=args.force)
    print(f"wrote {priv} (private, keep at the site) and {pub} (give to the coordinator)")
    return 0


def _audit(args: argparse.Namespace) -> int:
    from fedsynth.data import open_store, read_image_stack
    from fedsynth.io_utils import write_json_atomic
    from fedsynth.privacy.audit import audit_synthetic, plot_audit

    cfg = _config(args)
    store = open_store(args.store)
    syn = read_image_stack(args.synthetic, size=int(store.images.shape[-1]))
    result = audit_synthetic(syn, store.train_images(), store.train_patient_ids(), store.test_images(), cfg)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "audit.json", result)
    plot_audit(result, args.out / "audit.png")
    for m, r in result["metrics"].items():
        print(f"{m}: flagged {100 * r['flagged_share']:.1f}% of synthetic (held-out real: "
              f"{100 * r['test_flagged_share']:.1f}%), membership AUC {r['membership_auc']:.3f}")
    return 0
