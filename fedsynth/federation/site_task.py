"""What a site does for each protocol message, without any Flower types.

The site ``ClientApp`` (:mod:`fedsynth.federation.client_app`) only decodes a
message, calls one function here and encodes the reply. Everything here works
on the site's own disk: the ingested slice store, the generator checkpoint,
the signing key and a cache of the last published bundle (so a coordinator
that restarts never makes a site regenerate).

What may leave the site is decided by the return values of these functions:
counts and public facts (:func:`site_info`), the generator's checkpoint hash,
gate-accepted synthetic images and their signed certificate
(:func:`publish`), network weights trained on real data (:func:`train_local`,
the FedAvg baseline's inherent exposure) and metrics (:func:`evaluate`).
Never slices, patient ids or paths.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsynth.config import SiteConfig, load_toml
from fedsynth.errors import ConfigError, GateError
from fedsynth.federation.config import ScenarioConfig, SiteSettings, default_study_dir
from fedsynth.io_utils import write_bytes_atomic, write_json_atomic

__all__ = [
    "STUDY_ENV",
    "SiteRuntime",
    "evaluate",
    "load_study_spec",
    "open_site_store",
    "publish",
    "resolve_site",
    "simulated_site",
    "site_info",
    "site_key_dir",
    "train_generator",
    "train_local",
    "write_study_spec",
]

log = logging.getLogger(__name__)

#: Environment variable naming the resolved study spec (simulation; run_config is empty there).
STUDY_ENV = "FEDSYNTH_STUDY"
_STUDY_FILE = "study.json"


@dataclass(frozen=True)
class SiteRuntime:
    """Everything a site handler needs, resolved from node config / site TOML."""

    config: SiteConfig
    signing_key: Path
    torch_threads: int = 0
    audit_dir: Path | None = None

    @property
    def site_id(self) -> str:
        return self.config.id

    @property
    def workdir(self) -> Path:
        return Path(self.config.workdir)


# ---------------------------------------------------------------- resolution
def write_study_spec(out: Path, scenario: ScenarioConfig, mode: str) -> Path:
    """Write ``out/study.json``: the resolved scenario the apps of a simulation share."""
    path = Path(out) / _STUDY_FILE
    write_json_atomic(
        path, {"scenario": scenario.model_dump(mode="json"), "out": str(Path(out).resolve()), "mode": mode}
    )
    return path


def load_study_spec(run_config: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Find the study spec: ``$FEDSYNTH_STUDY`` or ``<run_config out>/study.json``."""
    path: Path | None = None
    if os.environ.get(STUDY_ENV):
        path = Path(os.environ[STUDY_ENV])
    elif run_config and str(run_config.get("out", "")):
        path = Path(str(run_config["out"])).expanduser() / _STUDY_FILE
    elif run_config and str(run_config.get("scenario", "")):
        path = default_study_dir(str(run_config["scenario"])) / _STUDY_FILE
    if path is None or not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def site_key_dir(workdir: Path) -> Path:
    """Where a site keeps its Ed25519 signing key when no path is configured."""
    return Path(workdir) / "keys"


def simulated_site(out: Path, scenario: ScenarioConfig, index: int) -> SiteConfig:
    """Site ``index`` (1-based) of a simulated study rooted at ``out``."""
    c = scenario.cohort
    return SiteConfig(
        id=f"site-{index}",
        modality=c.modality,
        data_dir=Path(out) / "cohort" / f"site-{index}",
        workdir=Path(out) / "sites" / f"site-{index}",
        image_size=c.size,
        train_fraction=c.train_fraction,
        seed=c.seed,
    )


def _find_private_key(keydir: Path) -> Path:
    cands = sorted(p for p in keydir.glob("*") if p.is_file() and not p.name.endswith(".pub"))
    if len(cands) != 1:
        raise ConfigError(f"{keydir}: expected exactly one private signing key, found {len(cands)}")
    return cands[0]


def resolve_site(node_config: dict[str, Any], run_config: dict[str, Any] | None = None) -> SiteRuntime:
    """Site settings from node config: ``site-config`` (a site TOML), explicit keys, or simulation.

    Explicit keys: ``data-dir``, ``workdir``, ``modality`` and optionally
    ``site-id``, ``image-size``, ``signing-key``. In simulation only
    ``partition-id`` is given and the site is derived from the study spec.
    """
    if "site-config" in node_config:
        s = load_toml(str(node_config["site-config"]), SiteSettings)
        key = s.daemon.signing_key or _find_private_key(site_key_dir(s.site.workdir))
        return SiteRuntime(s.site, Path(key), s.daemon.torch_threads, s.daemon.audit_dir)
    audit = os.environ.get("FEDSYNTH_AUDIT_DIR") or node_config.get("audit-dir")
    if "data-dir" in node_config:
        pid = int(node_config.get("partition-id", 0))
        cfg = SiteConfig(
            id=str(node_config.get("site-id", f"site-{pid + 1}")),
            modality=str(node_config.get("modality", "ct")),
            data_dir=Path(str(node_config["data-dir"])),
            workdir=Path(str(node_config["workdir"])),
            image_size=int(node_config.get("image-size", 128)),
        )
        key = node_config.get("signing-key") or _find_private_key(site_key_dir(cfg.workdir))
        return SiteRuntime(cfg, Path(str(key)), 0, Path(str(audit)) if audit else None)
    spec = load_study_spec(run_config)
    if spec is None or "partition-id" not in node_config:
        raise ConfigError(
            "site settings missing: give node config 'site-config' (a site TOML) or "
            "'data-dir'/'workdir', or run inside `fedsynth simulate`"
        )
    scenario = ScenarioConfig.model_validate(spec["scenario"])
    cfg = simulated_site(Path(spec["out"]), scenario, int(node_config["partition-id"]) + 1)
    key = _find_private_key(site_key_dir(cfg.workdir))
    return SiteRuntime(cfg, key, 1, Path(str(audit)) if audit else None)


# ---------------------------------------------------------------- handlers
def open_site_store(rt: SiteRuntime) -> Any:
    """Ingest (or reopen the cached) slice store of the site."""
    from fedsynth.data import ingest_site

    c = rt.config
    return ingest_site(
        c.data_dir, c.modality, out=rt.workdir / "slices", size=c.image_size,
        train_fraction=c.train_fraction, seed=c.seed, manifest=c.manifest,
        settings=c.ingest, progress=False,
    )


def _set_threads(rt: SiteRuntime) -> None:
    if rt.torch_threads > 0:
        import torch

        torch.set_num_threads(rt.torch_threads)


def site_info(rt: SiteRuntime) -> dict[str, Any]:
    """Public facts: id, modality, slice counts, image size, whether a generator exists."""
    store = open_site_store(rt)
    return {
        "site-id": rt.site_id,
        "modality": rt.config.modality,
        "n-train": int(len(store.train_images())),
        "n-test": int(len(store.test_images())),
        "image-size": int(store.images.shape[-1]),
        "generator-ready": _generator_ready(rt),
    }


def _generator_dir(rt: SiteRuntime) -> Path:
    return rt.workdir / "generator"


def _generator_ready(rt: SiteRuntime) -> bool:
    from fedsynth.generative import load_generator

    try:
        load_generator(_generator_dir(rt))
    except Exception:  # noqa: BLE001 - any failure means "not trained yet"
        return False
    return True


def train_generator(rt: SiteRuntime, profile: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Train (or resume, or skip when finished) the site's latent diffusion model."""
    from fedsynth.generative import load_generator, load_profile, train_ldm

    _set_threads(rt)
    t0 = time.time()
    workdir = _generator_dir(rt)
    skipped = _generator_ready(rt)
    if not skipped:
        store = open_site_store(rt)
        # The generator samples at the site's slice size so the gate compares like with like.
        cfg = load_profile(profile, **{"image_size": int(store.images.shape[-1]), **overrides})
        log.info("site %s: training generator (%s) on %d slices", rt.site_id, profile, len(store.train_images()))
        train_ldm(store.train_images(), workdir, cfg, resume=True)
    gen = load_generator(workdir)
    return {"checkpoint-hash": str(gen.checkpoint_hash), "skipped": bool(skipped), "seconds": time.time() - t0}


def _bundle_paths(rt: SiteRuntime) -> tuple[Path, Path]:
    d = rt.workdir / "published"
    return d / "images.npy", d / "certificate.json"


def publish(
    rt: SiteRuntime,
    gate: dict[str, Any],
    quota: int,
    max_attempts: int,
    seed: int,
    sample_steps: int | None,
) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
    """Synthesize through the privacy gate until ``quota``; sign; return (images, signed cert, stats).

    The last published bundle is cached at the site: if the same request comes
    again (coordinator restarted) the same images and certificate are returned
    without regenerating. Fails closed: any gate error publishes nothing.
    """
    import io

    from fedsynth.generative import load_generator
    from fedsynth.privacy import GateConfig, PrivacyGate, load_private_key, sign_certificate

    _set_threads(rt)
    img_path, cert_path = _bundle_paths(rt)
    gen = load_generator(_generator_dir(rt))
    request = {"gate": gate, "quota": quota, "max_attempts": max_attempts, "seed": seed,
               "sample_steps": sample_steps, "generator": str(gen.checkpoint_hash)}
    if img_path.exists() and cert_path.exists():
        cached = json.loads(cert_path.read_text(encoding="utf-8"))
        if cached.get("request") == request:
            log.info("site %s: re-sending the cached published bundle", rt.site_id)
            return np.load(img_path), cached["signed"], cached["stats"]
    store = open_site_store(rt)
    cfg = GateConfig.model_validate(gate)
    gate_obj = PrivacyGate(
        store.train_images(), cfg, reference_groups=store.train_patient_ids(),
        cache_dir=rt.workdir / "gate",
    )
    calls = {"n": 0}

    def source(n: int) -> Any:
        calls["n"] += 1
        return gen.sample(n, steps=sample_steps, seed=seed * 100_003 + calls["n"],
                          with_untextured=cfg.require_companions)

    log.info("site %s: publishing %d images through the gate", rt.site_id, quota)
    res = gate_obj.run(source, quota, max_attempts, str(gen.checkpoint_hash))
    accepted = np.ascontiguousarray(res.accepted, dtype=np.float32)
    if len(accepted) == 0:
        raise GateError(f"site {rt.site_id}: the gate accepted no image")
    signed = sign_certificate(res.certificate, load_private_key(rt.signing_key))
    stats = {"n-accepted": int(len(accepted)), "quota-met": bool(res.quota_met),
             "acceptance-rate": float(res.acceptance_rate),
             "n-rejected": int(res.n_candidates - len(accepted))}
    buf = io.BytesIO()
    np.save(buf, accepted, allow_pickle=False)
    write_bytes_atomic(img_path, buf.getvalue())
    write_json_atomic(cert_path, {"request": request, "signed": signed, "stats": stats})
    return accepted, signed, stats


def _model_from_state(task: dict[str, Any], state: dict[str, Any]) -> tuple[Any, Any]:
    from fedsynth.tasks import TaskConfig, build_network

    cfg = TaskConfig.model_validate(task)
    model = build_network(cfg)
    model.load_state_dict(state)
    return model, cfg


def train_local(
    rt: SiteRuntime,
    state: dict[str, Any],
    task: dict[str, Any],
    epochs: int,
    seed: int,
    proximal_mu: float = 0.0,
) -> tuple[dict[str, Any], dict[str, float]]:
    """Local epochs of the downstream network on the site's real training slices."""
    from fedsynth.tasks import fit_epochs

    _set_threads(rt)
    model, cfg = _model_from_state(task, state)
    store = open_site_store(rt)
    global_state = {k: v.clone() for k, v in state.items()} if proximal_mu > 0 else None
    out = fit_epochs(model, store.train_images(), cfg, epochs, seed,
                     proximal_mu=proximal_mu, global_state=global_state)
    return model.state_dict(), {"train-loss": float(out["loss"]), "num-examples": int(out["n"])}


def evaluate(rt: SiteRuntime, state: dict[str, Any], task: dict[str, Any], seed: int) -> dict[str, Any]:
    """Per-image PSNR/SSIM/RMSE of the given weights on the site's held-out test slices."""
    from fedsynth.tasks import evaluate_network

    _set_threads(rt)
    model, cfg = _model_from_state(task, state)
    store = open_site_store(rt)
    res = evaluate_network(model, store.test_images(), cfg, seed)
    return {k: np.asarray(res[k], dtype=np.float64) for k in ("psnr", "ssim", "rmse")}
