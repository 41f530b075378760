"""Phase ``train-generators``: every site trains (or resumes, or skips) its latent diffusion model."""

from __future__ import annotations

import logging

from fedsynth.federation import protocol as P
from fedsynth.federation.names import Method
from fedsynth.federation.phases import StudyRun

__all__ = ["train_generators"]

log = logging.getLogger(__name__)


def train_generators(run: StudyRun) -> dict[str, str]:
    """Ask every live site to train its generator with the scenario's profile; returns site -> checkpoint hash.

    The hashes are what each site's certificate must later name as its generator.
    """
    g = run.spec.scenario.generator
    content = P.GeneratorRequest(profile=g.profile, overrides=g.overrides).to_content()
    with run.roster.method(Method.SYNTHETIC_POOL):  # the generators are the synthetic route's cost
        replies = run.roster.ask(run.roster.alive(), P.MSG_TRAIN_GENERATOR, lambda s: content, run.timeout_s)
    hashes = {}
    for sid, r in sorted(replies.items()):
        rep = P.GeneratorReply.from_content(r.content)
        log.info("site %s: generator %s (%s)", sid, rep.checkpoint_hash[:12],
                 "cached" if rep.skipped else f"{rep.seconds:.0f} s")
        hashes[sid] = rep.checkpoint_hash
    return hashes
