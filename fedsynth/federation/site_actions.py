"""What a site does for each protocol message, on its own disk.

The site ``ClientApp`` (:mod:`fedsynth.federation.client_app`) decodes a
message into a typed request (:mod:`fedsynth.federation.protocol`), calls one
function here with the node's :class:`~fedsynth.federation.site_session.SiteSession`
and sends the typed reply back. Everything here works on the site's own
disk: the ingested slice store, the generator checkpoint, the signing key and
a cache of the last published bundle (so a coordinator that restarts never
makes a site regenerate).

What may leave the site is decided by the return values: counts and public
facts (:func:`site_info`), the generator's checkpoint hash, gate-accepted
synthetic images and their signed certificate (:func:`publish`), network
weights trained on real data (:func:`train`, the FedAvg baseline's inherent
exposure) and metrics (:func:`evaluate`). Never slices, patient ids or paths.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, RecordDict

from fedsynth.errors import DataError, GateError
from fedsynth.federation import protocol as P
from fedsynth.federation.release_review import (
    ReviewPending,
    open_review,
    read_decision,
    read_meta,
    review_dir,
)
from fedsynth.federation.site_session import SiteSession
from fedsynth.io_utils import atomic_dir, write_json_atomic

__all__ = ["evaluate", "publish", "site_info", "train", "train_generator"]

log = logging.getLogger(__name__)


def _generator_dir(s: SiteSession) -> Path:
    return s.runtime.workdir / "generator"


def _generator_ready(s: SiteSession) -> bool:
    from fedsynth.generative import load_generator

    try:
        load_generator(_generator_dir(s))
    except Exception:  # noqa: BLE001 - any failure means "not trained yet"
        return False
    return True


def site_info(s: SiteSession) -> P.SiteInfo:
    """Public facts: id, modality, slice counts, image size, whether a generator exists."""
    store = s.store()
    return P.SiteInfo(site_id=s.site_id, modality=s.runtime.config.modality,
                      n_train=int(len(store.train_images())), n_val=int(len(store.val_images())),
                      n_test=int(len(store.test_images())),
                      image_size=int(store.images.shape[-1]), generator_ready=_generator_ready(s))


def train_generator(s: SiteSession, req: P.GeneratorRequest) -> P.GeneratorReply:
    """Train (or resume, or skip when finished) the site's generator, stopped on its validation patients."""
    from fedsynth.generative import load_generator, load_profile, train_ldm

    s.use_threads()
    t0 = time.time()
    workdir = _generator_dir(s)
    skipped = _generator_ready(s)
    if not skipped:
        store = s.store()
        # The generator samples at the site's slice size so the gate compares like with like.
        cfg = load_profile(req.profile, **{"image_size": int(store.images.shape[-1]), **req.overrides})
        log.info("site %s: training generator (%s) on %d slices", s.site_id, req.profile,
                 len(store.train_images()))
        # the validation patients set how long the diffusion model trains (never the test patients)
        train_ldm(store.train_images(), workdir, cfg, resume=True, validation=store.val_images())
    gen = load_generator(workdir)
    return P.GeneratorReply(site_id=s.site_id, checkpoint_hash=str(gen.checkpoint_hash), skipped=bool(skipped),
                            seconds=time.time() - t0)


def _bundle_paths(s: SiteSession) -> tuple[Path, Path]:
    """The cached bundle: one directory, written whole (``atomic_dir``), so images and certificate always match."""
    d = s.runtime.workdir / "published" / "bundle"
    return d / "images.npy", d / "certificate.json"


def _make_bundle(s: SiteSession, req: P.PublishRequest) -> tuple[np.ndarray, np.ndarray | None, Any, dict[str, Any]]:
    """Synthesize through the privacy gate until the quota; sign; cache. Returns (images, companions, signed, stats).

    ``companions`` (asked for with ``req.companions``) are the published
    images' untextured samples: certified by the same gate (it must require
    companions, else the request is refused) and named in the signed
    certificate by digest; None when not asked for.

    The gate runs the stricter of the site's privacy policy and the request
    (a request that asks for less is refused); the certificate is signed
    with its binding to this site, the study, the request's nonce and the
    policy's digest. The last published bundle is cached at the site: if the same request comes
    again (later chunks, or a restarted coordinator) the same images and
    certificate are returned without regenerating. Fails closed: any gate
    error publishes nothing.
    """
    from fedsynth.generative import load_generator
    from fedsynth.privacy import SignedCertificate, load_private_key, sign_certificate

    policy = s.runtime.policy
    cfg = policy.apply(req.gate, req.quota, req.max_attempts)  # PolicyRefusal before anything is generated
    if req.companions and not cfg.require_companions:
        from fedsynth.privacy import PolicyRefusal

        raise PolicyRefusal("companions are published only by a gate that requires (and so certifies) them")
    _reserve(s, req)  # the policy's per-study limits hold across requests too
    s.use_threads()
    img_path, cert_path = _bundle_paths(s)
    gen = load_generator(_generator_dir(s))
    steps = req.sample_steps or None
    request = {"gate": cfg.model_dump(mode="json"), "quota": req.quota, "max_attempts": req.max_attempts,
               "seed": req.seed, "sample_steps": steps, "generator": str(gen.checkpoint_hash),
               "study_id": req.study_id, "nonce": req.nonce, "policy": policy.digest(), "two_sample": req.two_sample,
               "companions": req.companions}
    comp_path = img_path.with_name("companions.npy")
    if img_path.exists() and cert_path.exists():
        cached = json.loads(cert_path.read_text(encoding="utf-8"))
        if cached.get("request") == request:
            log.info("site %s: re-sending the cached published bundle", s.site_id)
            comps = np.load(comp_path) if req.companions else None
            return np.load(img_path), comps, SignedCertificate.model_validate(cached["signed"]), cached["stats"]
    rdir = review_dir(s.runtime.workdir, req.study_id, req.nonce) if policy.review and not s.runtime.simulated \
        else None
    if rdir is not None and rdir.exists():
        accepted, companions, cert, stats = _reviewed(s, rdir)
    else:
        accepted, companions, cert, stats, nearest = _gate_bundle(s, req, cfg, gen, steps)
        if rdir is not None:
            open_review(rdir, study_id=req.study_id, nonce=req.nonce, images=accepted, companions=companions,
                        certificate_json=cert.model_dump_json(exclude_unset=True), nearest=nearest, stats=stats)
            log.warning("site %s: %d images wait for release review (fedsynth site-review --config <site TOML>)",
                        s.site_id, len(accepted))
            raise ReviewPending(f"site {s.site_id}: the bundle waits for release review")
        if policy.review:  # a simulation: nobody reviews, and the certificate says so
            from fedsynth.privacy.certificate import ReleaseReview, timestamp

            cert = _released(cert, ReleaseReview(reviewer="automatic (simulation)", decided=timestamp(),
                                                 automatic=True))
    if not req.companions:
        companions = None
    elif companions is None or len(companions) != len(accepted):
        raise GateError(f"site {s.site_id}: the gate certified no companion for some published image")
    signed = sign_certificate(cert, load_private_key(s.runtime.signing_key), site_id=s.site_id,
                              study_id=req.study_id, nonce=req.nonce, policy_digest=policy.digest())
    with atomic_dir(img_path.parent) as tmp:
        np.save(tmp / img_path.name, accepted, allow_pickle=False)
        if companions is not None:
            np.save(tmp / comp_path.name, companions, allow_pickle=False)
        (tmp / cert_path.name).write_text(
            json.dumps({"request": request, "signed": signed.model_dump(mode="json"), "stats": stats}),
            encoding="utf-8")
    return accepted, companions, signed, stats


def _gate_bundle(s: SiteSession, req: P.PublishRequest, cfg: Any, gen: Any, steps: int | None
                 ) -> tuple[np.ndarray, np.ndarray | None, Any, dict[str, Any], list[dict[str, Any]]]:
    """Generate through the gate and audit what it accepted; unsigned.

    Returns (accepted, their companions or None, certificate, stats, nearest
    real slice per metric of each accepted image: what a reviewer sees).
    """
    from fedsynth.privacy import PrivacyGate

    store = s.store()
    learned = "learned_copy" in cfg.metrics
    train = store.train_images()
    detector = _copy_detector(s, store, train) if learned else None
    gate = PrivacyGate(train, cfg, reference_groups=store.train_patient_ids(),
                       cache_dir=s.runtime.workdir / "gate", detector=detector,
                       holdout=store.val_images() if learned else None)
    calls = {"n": 0}

    def source(n: int) -> Any:
        calls["n"] += 1
        return gen.sample(n, steps=steps, seed=req.seed * 100_003 + calls["n"],
                          with_untextured=cfg.require_companions)

    log.info("site %s: publishing %d images through the gate", s.site_id, req.quota)
    res = gate.run(source, req.quota, req.max_attempts, str(gen.checkpoint_hash))
    accepted = np.ascontiguousarray(res.accepted, dtype=np.float32)
    if len(accepted) == 0:
        raise GateError(f"site {s.site_id}: the gate accepted no image")
    from fedsynth.privacy.audit import memorisation

    # the audit's held-out side: validation patients (test patients are only for the final evaluation)
    held = "val" if len(store.val_images()) else "test"
    audit = memorisation(gate, accepted, store.images_of(held), store.patient_ids_of(held), seed=req.seed)
    update: dict[str, Any] = {"memorisation": audit, "pixel_mm": store.typical_pixel_mm(),
                              "generator": _generator_diagnostics(store, accepted, gen, req.seed)}
    if req.two_sample:
        update["quality"] = _two_sample(store, accepted, req.seed)
    cert = res.certificate.model_copy(update=update)
    stats = {"n-accepted": int(len(accepted)), "quota-met": bool(res.quota_met),
             "acceptance-rate": float(res.acceptance_rate),
             "n-rejected": int(res.n_candidates - len(accepted))}
    companions = None if res.companions is None else np.ascontiguousarray(res.companions, dtype=np.float32)
    nearest = [{m: {"distance": e[m]["distance"], "reference_index": e[m]["reference_index"]} for m in cfg.metrics}
               for e in res.audit["candidates"] if e["accepted"]]
    return accepted, companions, cert, stats, nearest


def _released(cert: Any, review: Any) -> Any:
    """``cert`` with the reviewer's decision: only the images not withheld are published, summary recounted."""
    withheld = set(review.withheld)
    kept = [c for c in cert.images if c.accepted and c.digest not in withheld]
    summary = cert.summary.model_copy(update={
        "n_published": len(kept), "quota_met": len(kept) >= cert.summary.quota,
        "min_nearest_published": {m: min((c.nn_distance[m] for c in kept), default=None) for m in cert.metrics}})
    return cert.model_copy(update={"review": review, "published": [c.digest for c in kept], "summary": summary})


def _reviewed(s: SiteSession, rdir: Path) -> tuple[np.ndarray, np.ndarray | None, Any, dict[str, Any]]:
    """The bundle as the site's reviewer decided it; ReviewPending while undecided, GateError if rejected."""
    from fedsynth.digests import array_digest
    from fedsynth.privacy import ReleaseReview, parse_certificate

    decision = read_decision(rdir)
    if decision is None:
        raise ReviewPending(f"site {s.site_id}: the bundle waits for release review")
    if decision.rejected:
        raise GateError(f"site {s.site_id}: the site's reviewer ({decision.reviewer}) withheld the whole bundle")
    images = np.load(rdir / "candidates.npy")
    comps = np.load(rdir / "companions.npy") if (rdir / "companions.npy").is_file() else None
    digests = [array_digest(x) for x in images]
    keep = np.array([d in set(decision.released) for d in digests])
    cert = parse_certificate(json.loads((rdir / "certificate.json").read_text(encoding="utf-8")))
    review = ReleaseReview(reviewer=decision.reviewer, decided=decision.decided,
                           withheld=[d for d, k in zip(digests, keep, strict=True) if not k])
    cert = _released(cert, review)
    cert.check_consistency()
    stats = {**read_meta(rdir)["stats"],
             "n-accepted": int(keep.sum()), "n-withheld": int((~keep).sum())}
    return images[keep], None if comps is None else comps[keep], cert, stats


def _copy_detector(s: SiteSession, store: Any, train: np.ndarray) -> Any:
    """The site's copy detector for these training slices: loaded if trained before, else trained and saved.

    Keyed by the slices' digest, so a changed training set trains a new one;
    the checkpoint is the site's (it never leaves), its fingerprint goes into
    the certificate.
    """
    import hashlib

    from fedsynth.digests import array_digest
    from fedsynth.privacy.copy_detector import CopyDetector, train_copy_detector

    cfg = s.runtime.policy.copy_detector
    key = array_digest(train)[:16] + "-" + hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:8]
    path = s.runtime.workdir / "copy-detector" / f"{key}.pt"
    if path.is_file():
        return CopyDetector.load(path)
    log.info("site %s: training its copy detector on %d slices", s.site_id, len(train))
    det = train_copy_detector(train, store.train_patient_ids(), cfg,
                              positions=store.slice_indices[store.split == "train"])
    path.parent.mkdir(parents=True, exist_ok=True)
    det.save(path)
    return det


def _generator_diagnostics(store: Any, published: np.ndarray, gen: Any, seed: int) -> Any:
    """The published images' noise power spectrum against the site's real slices, and the generator's effort.

    Against the training and validation patients (never test). Numbers only:
    per-band power ratios and CIs, step and image counts. None when the
    images have no flat region to measure (the spectrum is then absent, and the reason given).
    """
    from fedsynth.errors import DataError
    from fedsynth.generative.noise_spectrum import compare_noise_spectra
    from fedsynth.privacy.certificate import GeneratorDiagnostics

    t = gen.training
    try:
        ns = compare_noise_spectra(published, store.parts("train", "val")[0], seed=seed)
        noise: dict[str, Any] = dict(
            noise_bands=[tuple(b) for b in ns["bands"]], noise_power_ratio=ns["ratio"],
            noise_power_ci95=[tuple(c) for c in ns["ci95"]], noise_tolerance=ns["tolerance"],
            noise_within=ns["within"])
    except DataError as err:
        noise = {"noise_skipped": str(err)}
    steps = t.get("optimizer_steps") or {}
    return GeneratorDiagnostics(
        kind=gen.config.kind, optimizer_steps=int(sum(steps.values())),
        images_seen=int(sum((t.get("samples_seen") or {}).values())), train_seconds=float(t.get("train_seconds", 0.0)),
        stopped=t.get("stopped", "max_epochs"), best_epoch=int(t.get("best_epoch") or 0), **noise)


def _two_sample(store: Any, published: np.ndarray, seed: int) -> dict[str, Any]:
    """The classifier two-sample test of the published images against the training and validation patients.

    Numbers only leave the site (AUCs, their CIs, counts). One 3-fold pass per
    test (``repeats=1``) keeps it to seconds in a study; ``fedsynth site
    evaluate`` repeats it three times. Too few patients: the reason, not a guess.
    """
    from fedsynth.generative.two_sample import two_sample_report

    real, groups = store.parts("train", "val")
    return two_sample_report(real, groups, published, repeats=1, seed=seed)


def _reserve(s: SiteSession, req: P.PublishRequest) -> None:
    """Count this request against the study's limits in the site's ledger; PolicyRefusal when over.

    ``published/ledger.json`` holds, per study id and request nonce, the
    images and candidates the site agreed to; a coordinator cannot exceed
    ``max_images``/``max_candidates`` for one study by sending more requests.
    A request is counted once (its nonce), and before generation, so a crash
    never under-counts.
    """
    from fedsynth.privacy import PolicyRefusal

    path = s.runtime.workdir / "published" / "ledger.json"
    ledger: dict[str, dict[str, dict[str, int]]] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    study = ledger.setdefault(req.study_id, {})
    others = [v for k, v in study.items() if k != req.nonce]
    asked = req.quota * (2 if req.companions else 1)  # a companion is an image that leaves too
    images = sum(v["images"] for v in others) + asked
    candidates = sum(v["candidates"] for v in others) + req.max_attempts
    policy = s.runtime.policy
    if images > policy.max_images or candidates > policy.max_candidates:
        raise PolicyRefusal(f"refused by the site's privacy policy: this study would receive {images} images "
                            f"(at most {policy.max_images}) from {candidates} candidates (at most "
                            f"{policy.max_candidates}) over {len(others) + 1} requests")
    study[req.nonce] = {"images": asked, "candidates": req.max_attempts}
    write_json_atomic(path, ledger)


def publish(s: SiteSession, req: P.PublishRequest) -> P.PublishChunk:
    """One chunk (``offset``, ``chunk_images``) of the site's gate-certified bundle.

    The bundle is generated and signed on the first request and cached at the
    site, so later chunks (and a restarted coordinator) read the same bundle.
    The signed certificate travels with the chunk at offset 0 only.
    """
    try:
        images, companions, signed, stats = _make_bundle(s, req)
    except ReviewPending:
        size = int(s.store().images.shape[-1])
        return P.PublishChunk(site_id=s.site_id, offset=0, n_total=0, quota_met=False, n_accepted=0, n_rejected=0,
                              acceptance_rate=0.0, images=np.zeros((0, size, size), np.float32), pending=True)
    chunk = req.chunk_images or len(images)
    if not 0 <= req.offset < max(len(images), 1):
        raise P.ProtocolError(f"publish offset {req.offset} outside a bundle of {len(images)}")
    return P.PublishChunk(
        site_id=s.site_id, offset=req.offset, n_total=len(images), quota_met=bool(stats["quota-met"]),
        n_accepted=int(stats["n-accepted"]), n_rejected=int(stats.get("n-rejected", 0)),
        acceptance_rate=float(stats["acceptance-rate"]), images=images[req.offset : req.offset + chunk],
        signed=signed if req.offset == 0 else None,
        companions=None if companions is None else companions[req.offset : req.offset + chunk])


def _model(task: Any, weights: ArrayRecord) -> Any:
    import torch  # noqa: F401 - Flower's to_torch_state_dict needs torch already imported

    from fedsynth.tasks import build_network

    model = build_network(task)
    model.load_state_dict(weights.to_torch_state_dict())
    return model


def train(s: SiteSession, req: P.TrainRequest, weights: ArrayRecord, state: RecordDict | None = None) -> P.TrainReply:
    """The downstream network on the site's real training slices: one weight-averaging round, or a whole training.

    A round (``req.budget`` unset) runs ``local_epochs`` epochs; with
    ``req.keep_optimizer`` the Adam state is restored from and saved to
    ``state`` (the node's Flower ``Context.state``) under that name, so the
    client optimiser lives across rounds as in centralised training; round 1
    starts it fresh. A whole training (``req.budget`` set, local-only) stops
    early on the site's own validation patients and returns the best weights.
    """
    from fedsynth.tasks import fit_epochs
    from fedsynth.tasks.training import (
        load_optimizer_arrays,
        make_optimizer,
        optimizer_arrays,
        optimizer_step_count,
    )

    s.use_threads()
    model = _model(req.task, weights)
    store = s.store()
    images, pixel_mm = store.train_images(), store.pixel_mm_of("train")
    if req.budget is not None:
        return _train_until_converged(s, req, model, images, pixel_mm)
    opt = make_optimizer(model, req.task)
    key = f"optimizer:{req.keep_optimizer}"
    if req.keep_optimizer and req.server_round > 1 and state is not None and key in state:
        load_optimizer_arrays(opt, state[key].to_torch_state_dict())
    mstate = model.state_dict()
    global_state = {k: v.clone() for k, v in mstate.items()} if req.proximal_mu > 0 else None
    out = fit_epochs(model, images, req.task, req.local_epochs, req.seed + req.server_round,
                     proximal_mu=req.proximal_mu, global_state=global_state, optimizer=opt, pixel_mm=pixel_mm)
    if req.keep_optimizer and state is not None:
        state[key] = ArrayRecord(optimizer_arrays(opt))
    return P.TrainReply(ArrayRecord(model.state_dict()), float(out["loss"]), int(out["n"]), int(out["steps"]),
                        optimizer_step_count(opt), int(out["n_patches"]) * req.local_epochs)


def _val_scores(s: SiteSession, task: Any, model: Any, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-image metrics of ``model`` on the site's validation patients, and their patient ids."""
    from fedsynth.tasks import evaluate_network

    store = s.store()
    images = store.val_images()
    if len(images) == 0:
        raise DataError(f"site {s.site_id} has no validation patients (set val_fraction in its config)")
    return evaluate_network(model, images, task, seed, store.pixel_mm_of("val")), store.val_patient_ids()


def _train_until_converged(s: SiteSession, req: P.TrainRequest, model: Any, images: np.ndarray,
                           pixel_mm: np.ndarray) -> P.TrainReply:
    from fedsynth.tasks import train_until_converged

    assert req.budget is not None
    val_seed = req.seed + P.VALIDATION_SEED

    def validate(m: Any) -> dict[str, float]:
        scores, _ = _val_scores(s, req.task, m, val_seed)
        return {"val_mse": float(np.mean(np.asarray(scores["rmse"], np.float64) ** 2)),
                "val_psnr": float(np.mean(scores["psnr"]))}

    best, curve = train_until_converged(model, images, req.task, req.seed, req.budget, validate, pixel_mm)
    model.load_state_dict(best)
    last = curve[-1]
    return P.TrainReply(ArrayRecord(model.state_dict()), float(last["train_loss"]), int(len(images)),
                        int(last["steps"]), int(last["steps"]), int(last["samples"]), curve)


def evaluate(s: SiteSession, req: P.EvaluateRequest, weights: ArrayRecord) -> P.EvaluateReply:
    """Per-image PSNR/SSIM/RMSE (and the degraded input's) of the given weights on validation or test patients.

    ``split = "test"`` is the final evaluation; ``"val"`` every choice before it.
    """
    from fedsynth.tasks import evaluate_network

    s.use_threads()
    model = _model(req.task, weights)
    store = s.store()
    if req.split == "val":
        res, pids = _val_scores(s, req.task, model, req.seed)
    else:
        res = evaluate_network(model, store.test_images(), req.task, req.seed, store.pixel_mm_of("test"))
        pids = store.test_patient_ids()
    # patients numbered in an order that never leaves the site: the unit of analysis, not an identity
    _, numbers = np.unique(pids, return_inverse=True)
    keys = P.EvaluateReply.METRICS + P.EvaluateReply.INPUT_METRICS
    return P.EvaluateReply({k: np.asarray(res[k], dtype=np.float64).ravel().tolist() for k in keys if k in res},
                           numbers.astype(int).tolist())
