"""Phase ``publish``: every site publishes through its gate; bundles are fetched, verified and pooled.

The site generates, gates and signs its whole bundle on the first request
and caches it; the coordinator fetches it in chunks of
``publish.chunk_images``, chunk k from every site in one round (a round trip
costs seconds in deployment whatever its size: docs/reliability.md, "Load"),
(:class:`~fedsynth.federation.protocol.BundleAssembler` refuses missing,
overlapping or misfit chunks), then the pool verifies the
signature against the site's *registered* key and the exact images, the
signed binding to this site, study and request nonce (and the site's
registered policy digest), and that the certificate is at least as strict as
the request (:func:`answers_request`), before anything is stored. A site whose gate publishes nothing, or whose bundle is
rejected, stays in the study (that is a privacy outcome, not a failure) and
is named under ``rejected_bundles``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fedsynth.errors import GateError
from fedsynth.federation import protocol as P
from fedsynth.federation.names import Method
from fedsynth.federation.phases import StudyRun
from fedsynth.federation.roster import Site, StudyError
from fedsynth.federation.study_dir import registered_key, registered_policy

__all__ = ["privacy_row", "publish"]

log = logging.getLogger(__name__)


def publish(
    run: StudyRun, rejected: dict[str, str], study_id: str, nonce: str, generators: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """Publish from every live site whose bundle is not pooled yet; returns the privacy row of every live site.

    ``study_id`` and ``nonce`` go into the request and must come back inside
    each signed certificate; ``generators`` (site -> checkpoint hash) is what
    each certificate must name. ``rejected`` (site id -> reason) is updated
    with sites that refused the request, whose gate failed, or whose bundle
    the pool refused.
    """
    sc = run.spec.scenario
    pub = sc.publish
    request = P.PublishRequest(gate=sc.gate, quota=pub.quota, max_attempts=pub.candidate_limit(), seed=sc.seed,
                               study_id=study_id, nonce=nonce, sample_steps=int(sc.generator.sample_steps or 0),
                               chunk_images=pub.chunk_images, two_sample=pub.two_sample,
                               companions=sc.training.untextured_control)
    alive = run.roster.alive()
    todo = [s for s in alive if not run.pool.bundles(site=s.site_id, verified=True)]
    for s in alive:
        if s not in todo:
            log.info("site %s: bundle already pooled (%d images), not asked again", s.site_id,
                     run.pool.count(s.site_id))
    with run.roster.method(Method.SYNTHETIC_POOL):
        first = run.roster.ask(todo, P.MSG_PUBLISH, lambda s: request.to_content(), run.timeout_s,
                               errors=rejected)
        heads = {}
        for s in todo:
            if s.site_id in first:
                try:
                    heads[s.site_id] = (s, P.PublishChunk.from_content(first[s.site_id].content))
                except P.ProtocolError as err:
                    _refuse(s.site_id, f"malformed publish reply: {err}", rejected)
        _await_reviews(run, heads, request, rejected)
        for site_id, (images, companions) in _fetch_bundles(run, heads, request, rejected).items():
            s, head = heads[site_id]
            _pool_bundle(run, s, head, images, companions, request, rejected, generators.get(site_id))
    rows = {s.site_id: privacy_row(run, s.site_id, rejected) for s in run.roster.alive()}
    if run.pool.count() == 0:
        raise StudyError("no site published an accepted bundle; the pool is empty ("
                         + "; ".join(f"{k}: {v}" for k, v in sorted(rejected.items())) + ")")
    return rows


def _await_reviews(run: StudyRun, heads: dict[str, tuple[Site, P.PublishChunk]], request: P.PublishRequest,
                   rejected: dict[str, str]) -> None:
    """Ask sites whose bundle waits for their reviewer again every ``review_poll_s`` until decided or timed out.

    A site's release review is a person deciding; the study waits for it (up
    to the site timeout) instead of dropping the site. A bundle still
    undecided then, or rejected by the reviewer, is a rejected bundle: the
    site stays in the study for the baselines. ``heads`` is updated in place.
    """
    pending = sorted(sid for sid, (_, head) in heads.items() if head.pending)
    if not pending:
        return
    poll = run.spec.scenario.publish.review_poll_s
    deadline = time.monotonic() + run.timeout_s
    log.warning("%s: the bundle waits for release review at the site; asking again every %.0f s for up to %.0f s",
                ", ".join(pending), poll, run.timeout_s)
    while pending:
        if time.monotonic() + poll > deadline:
            for sid in pending:
                heads.pop(sid)
                _refuse(sid, f"release review not decided within {run.timeout_s:.0f} s", rejected)
            return
        time.sleep(poll)
        sites = [heads[sid][0] for sid in pending]
        rep = run.roster.ask(sites, P.MSG_PUBLISH, lambda s: request.to_content(), run.timeout_s, errors=rejected)
        for s in sites:
            try:
                if s.site_id not in rep:
                    raise P.ProtocolError(rejected.get(s.site_id, "no reply"))
                head = P.PublishChunk.from_content(rep[s.site_id].content)
            except P.ProtocolError as err:
                heads.pop(s.site_id)
                pending.remove(s.site_id)
                if s.site_id not in rejected:
                    _refuse(s.site_id, f"malformed publish reply: {err}", rejected)
                continue
            heads[s.site_id] = (s, head)
            if not head.pending:
                pending.remove(s.site_id)
                log.info("site %s: release review decided", s.site_id)


def answers_request(cert: Any, request: P.PublishRequest, site: Site, generator_hash: str | None) -> None:
    """A verified certificate is at least as strict as the request it answers; GateError otherwise.

    The site may run a stricter gate (its own policy), never a weaker one:
    every requested metric, a calibration percentile and thresholds at least
    the requested ones, companions and transforms covered, no more images or
    candidates than asked for, the site's image size and the generator it
    reported.
    """
    from fedsynth.privacy import GatePolicy

    floor = GatePolicy.from_request(request.gate, request.quota, request.max_attempts)
    short = floor.shortfalls(cert.config, cert.summary.n_published, cert.summary.n_candidates)
    if request.gate.mode == "calibrated" and cert.config.mode != "calibrated":
        short.append("a calibrated gate was requested, an absolute one was run")
    thresholds = cert.thresholds()
    for m, t in sorted(request.gate.thresholds.items()):
        if thresholds.get(m, 0.0) < t:
            short.append(f"threshold {m} {thresholds.get(m, 0.0):g} is below the requested {t:g}")
    if sorted(thresholds) != sorted(cert.config.metrics):
        short.append("thresholds do not cover exactly the certified metrics")
    if cert.reference.image_shape != [site.info.image_size] * 2:
        short.append(f"image shape {cert.reference.image_shape} is not the site's {site.info.image_size}px")
    if request.companions and not cert.companions.required:
        short.append("companions were asked for but the gate did not require them")
    if generator_hash is not None and cert.generator_hash != generator_hash:
        short.append("the generator is not the one the site reported")
    if short:
        raise GateError("certificate does not answer the request: " + "; ".join(short))


def _refuse(site_id: str, reason: str, rejected: dict[str, str]) -> None:
    log.error("site %s: bundle REJECTED: %s", site_id, reason)
    rejected[site_id] = reason


def _fetch_bundles(run: StudyRun, heads: dict[str, tuple[Site, P.PublishChunk]], request: P.PublishRequest,
                   rejected: dict[str, str]) -> dict[str, Any]:
    """Every site's whole bundle (site id -> (images, companions or None)), chunk k of all sites asked in one round.

    A site dropped on the way (error, timeout) is left out, one whose chunks
    do not fit its bundle is rejected; the others go on. With
    ``request.companions`` every chunk must carry its companions too.
    """
    asm: dict[str, P.BundleAssembler] = {}
    comp: dict[str, P.BundleAssembler] = {}
    plan: dict[str, list[int]] = {}

    def add(site_id: str, chunk: P.PublishChunk) -> None:
        asm[site_id].add(chunk.offset, chunk.images)
        if request.companions:
            if chunk.companions is None or len(chunk.companions) != len(chunk.images):
                raise P.ProtocolError("a chunk without the companions of its images")
            comp[site_id].add(chunk.offset, chunk.companions)

    for site_id, (_, head) in heads.items():
        try:
            if head.n_total > request.quota:  # never size anything by a count the quota does not allow
                raise P.ProtocolError(f"the site announces {head.n_total} images, more than the quota {request.quota}")
            asm[site_id] = P.BundleAssembler(head.n_total)
            comp[site_id] = P.BundleAssembler(head.n_total)
            add(site_id, head)
            plan[site_id] = [start for start, _ in P.chunk_ranges(head.n_total, request.chunk_images)[1:]]
        except P.ProtocolError as err:
            asm.pop(site_id, None)
            _refuse(site_id, f"malformed publish reply: {err}", rejected)
    k = 0
    while sites := [heads[i][0] for i in asm if k < len(plan[i])]:
        for s in sites:
            start, total = plan[s.site_id][k], heads[s.site_id][1].n_total
            log.info("site %s: fetching images %d-%d of %d", s.site_id, start,
                     min(start + request.chunk_images, total), total)
        rep = run.roster.ask(sites, P.MSG_PUBLISH,
                             lambda s, k=k: request.model_copy(update={"offset": plan[s.site_id][k]}).to_content(),
                             run.timeout_s)
        for s in sites:
            if s.site_id not in rep:
                del asm[s.site_id]
                continue
            try:
                add(s.site_id, P.PublishChunk.from_content(rep[s.site_id].content))
            except P.ProtocolError as err:
                del asm[s.site_id]
                _refuse(s.site_id, f"malformed publish reply: {err}", rejected)
        k += 1
    out = {}
    for site_id, a in asm.items():
        try:
            out[site_id] = (a.images(), comp[site_id].images() if request.companions else None)
        except P.ProtocolError as err:
            _refuse(site_id, f"incomplete bundle: {err}", rejected)
    return out


def _pool_bundle(run: StudyRun, site: Site, head: P.PublishChunk, images: Any, companions: Any,
                 request: P.PublishRequest, rejected: dict[str, str], generator_hash: str | None) -> None:
    """Verify ``site``'s reassembled bundle against its registered key and the request, then pool it."""
    key_path = registered_key(run.spec.site_keys, site.site_id)
    try:
        if not key_path.is_file():
            raise GateError(f"no registered public key for {site.site_id} ({key_path.name})")
        from fedsynth.privacy import Expected, load_public_key

        expected = Expected(site_id=site.site_id, study_id=request.study_id, nonce=request.nonce,
                            policy_digest=registered_policy(run.spec.site_keys, site.site_id))
        signed = head.signed.model_dump(mode="json") if head.signed is not None else {}
        rec = run.pool.add_bundle(site.site_id, images, signed, load_public_key(key_path), expected=expected,
                                  conforms=lambda cert: answers_request(cert, request, site, generator_hash),
                                  companions=companions)
        log.info("site %s: %d images verified and pooled (%d new)", site.site_id, rec.n_images, rec.n_new)
    except GateError as err:
        _refuse(site.site_id, str(err), rejected)


def privacy_row(run: StudyRun, site_id: str, rejected: dict[str, str]) -> dict[str, Any]:
    """The report's privacy row of one site, read from its verified certificate in the pool."""
    from fedsynth.privacy import parse_certificate

    bundles = run.pool.bundles(site=site_id, verified=True)
    if not bundles:
        return {"threshold": None, "min_nn_distance": None, "n_published": 0, "n_rejected": None,
                "status": rejected.get(site_id, "no bundle")}
    cert = parse_certificate(bundles[-1]["certificate"]["certificate"])
    return {
        "policy_digest": cert.binding.policy_digest if cert.binding else None,
        "threshold": cert.thresholds(),
        "min_nn_distance": dict(cert.summary.min_nearest_published),
        "n_published": run.pool.count(site_id),
        "n_rejected": cert.summary.n_rejected,
        "acceptance_rate": cert.summary.acceptance_rate,
        "quota_met": cert.summary.quota_met,
        "threshold_ci95_over_patients": {m: (v.calibration or {}).get("ci95_over_patients")
                                         for m, v in cert.metrics.items()},
        "memorisation": cert.memorisation,
        "candidates_flagged": _candidates_flagged(cert),
        "two_sample": cert.quality,
        "generator": None if cert.generator is None else cert.generator.model_dump(mode="json"),
        "release_review": None if cert.review is None else {
            "reviewer": cert.review.reviewer, "automatic": cert.review.automatic, "decided": cert.review.decided,
            "withheld": len(cert.review.withheld)},
    }


def _candidates_flagged(cert: Any) -> dict[str, float]:
    """Per metric, the share of all candidates the generator drew that the metric alone would have rejected.

    Before the gate, so it measures the generator: with ``learned_copy`` this
    is the share of samples the site's copy detector calls a copy of a
    training slice ("% copies" of Dar et al. 2025, on unfiltered samples).
    """
    bars = {m: cert.acceptance_margin.bar(t) for m, t in cert.thresholds().items()}
    rows = cert.images
    if not rows:
        return {}
    return {m: float(sum(r.nn_distance.get(m, float("inf")) < bar for r in rows) / len(rows))
            for m, bar in bars.items()}
