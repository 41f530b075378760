"""Phase ``publish``: every site publishes through its gate; bundles are fetched, verified and pooled.

The site generates, gates and signs its whole bundle on the first request
and caches it; the coordinator fetches it in chunks of
``publish.chunk_images`` (:class:`~fedsynth.federation.protocol.BundleAssembler`
refuses missing, overlapping or misfit chunks), then the pool verifies the
signature against the site's *registered* key and the exact images before
anything is stored. A site whose gate publishes nothing, or whose bundle is
rejected, stays in the study (that is a privacy outcome, not a failure) and
is named under ``rejected_bundles``.
"""

from __future__ import annotations

import logging
from typing import Any

from flwr.app import Message

from fedsynth.errors import GateError
from fedsynth.federation import protocol as P
from fedsynth.federation.names import Method
from fedsynth.federation.phases import StudyRun
from fedsynth.federation.roster import Site, StudyError

__all__ = ["privacy_row", "publish"]

log = logging.getLogger(__name__)


def publish(run: StudyRun, rejected: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Publish from every live site whose bundle is not pooled yet; returns the privacy row of every live site.

    ``rejected`` (site id -> reason) is updated with sites whose gate failed or
    whose bundle the pool refused.
    """
    sc = run.spec.scenario
    pub = sc.publish
    request = P.PublishRequest(gate=sc.gate, quota=pub.quota, max_attempts=pub.candidate_limit(), seed=sc.seed,
                               sample_steps=int(sc.generator.sample_steps or 0), chunk_images=pub.chunk_images)
    alive = run.roster.alive()
    todo = [s for s in alive if not run.pool.bundles(site=s.site_id, verified=True)]
    for s in alive:
        if s not in todo:
            log.info("site %s: bundle already pooled (%d images), not asked again", s.site_id,
                     run.pool.count(s.site_id))
    with run.roster.method(Method.SYNTHETIC_POOL):
        first = run.roster.ask(todo, P.MSG_PUBLISH, lambda s: request.to_content(), run.timeout_s,
                               errors=rejected)
        for s in todo:
            if s.site_id in first:
                _fetch_bundle(run, s, first[s.site_id], request, rejected)
    rows = {s.site_id: privacy_row(run, s.site_id, rejected) for s in run.roster.alive()}
    if run.pool.count() == 0:
        raise StudyError("no site published an accepted bundle; the pool is empty")
    return rows


def _fetch_bundle(run: StudyRun, site: Site, first: Message, request: P.PublishRequest,
                  rejected: dict[str, str]) -> None:
    head = P.PublishChunk.from_content(first.content)
    asm = P.BundleAssembler(head.n_total)
    asm.add(0, head.images)
    for start, _ in P.chunk_ranges(head.n_total, request.chunk_images)[1:]:
        log.info("site %s: fetching images %d-%d of %d", site.site_id, start,
                 min(start + request.chunk_images, head.n_total), head.n_total)
        content = request.model_copy(update={"offset": start}).to_content()
        rep = run.roster.ask([site], P.MSG_PUBLISH, lambda s, c=content: c, run.timeout_s)
        if site.site_id not in rep:
            return
        chunk = P.PublishChunk.from_content(rep[site.site_id].content)
        asm.add(chunk.offset, chunk.images)
    images = asm.images()
    key_path = run.spec.site_keys / f"{site.site_id}.pub"
    try:
        if not key_path.is_file():
            raise GateError(f"no registered public key for {site.site_id} ({key_path.name})")
        from fedsynth.privacy import load_public_key

        signed = head.signed.model_dump(mode="json") if head.signed is not None else {}
        rec = run.pool.add_bundle(site.site_id, images, signed, load_public_key(key_path))
        log.info("site %s: %d images verified and pooled (%d new)", site.site_id, rec.n_images, rec.n_new)
    except GateError as err:
        log.error("site %s: bundle REJECTED: %s", site.site_id, err)
        rejected[site.site_id] = str(err)


def privacy_row(run: StudyRun, site_id: str, rejected: dict[str, str]) -> dict[str, Any]:
    """The report's privacy row of one site, read from its verified certificate in the pool."""
    from fedsynth.privacy import parse_certificate

    bundles = run.pool.bundles(site=site_id, verified=True)
    if not bundles:
        return {"threshold": None, "min_nn_distance": None, "n_published": 0, "n_rejected": None,
                "status": rejected.get(site_id, "no bundle")}
    cert = parse_certificate(bundles[-1]["certificate"]["certificate"])
    return {
        "threshold": cert.thresholds(),
        "min_nn_distance": dict(cert.summary.min_nearest_published),
        "n_published": run.pool.count(site_id),
        "n_rejected": cert.summary.n_rejected,
        "acceptance_rate": cert.summary.acceptance_rate,
        "quota_met": cert.summary.quota_met,
    }
