"""Load app: each site serves ``images-per-site`` images in publish chunks; the coordinator pools them.

The messages are fedsynth's own (``PublishRequest`` out, ``PublishChunk`` back,
``BundleAssembler`` at the coordinator, one bundle object written per site), so
what is measured is the publish phase's transport through the Deployment Engine:
TLS, node authentication, the front door, Flower's 5 MiB object chunking. The
generator, the gate and the certificate are not in it (their costs are in
docs/benchmarks.md). The coordinator fetches chunk k from every site at once,
as the study's publish phase does.
"""

from __future__ import annotations

import json
import resource
import secrets
import time
from pathlib import Path

import numpy as np
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedsynth.federation import protocol as P
from fedsynth.io_utils import write_bytes_atomic
from fedsynth.privacy.config import GateConfig

server = ServerApp()
client = ClientApp()


@client.query(P.ACTION_PUBLISH)
def serve_chunk(msg: Message, context: Context) -> Message:
    """Images ``offset ... offset + chunk`` of this site's (deterministic, random) bundle."""
    req = P.PublishRequest.from_content(msg.content)
    total, size = int(context.run_config["images-per-site"]), int(context.run_config["size"])
    stop = min(req.offset + req.chunk_images, total)
    rng = np.random.default_rng([context.node_id % 2**32, req.offset])
    images = rng.random((stop - req.offset, size, size), dtype=np.float32)
    chunk = P.PublishChunk(site_id=f"node-{context.node_id}", offset=req.offset, n_total=total, quota_met=True,
                           n_accepted=total, n_rejected=0, acceptance_rate=1.0, images=images)
    return Message(chunk.to_content(), reply_to=msg)


@server.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    out = Path(str(cfg["out"]))
    total, chunk, n_sites = int(cfg["images-per-site"]), int(cfg["chunk-images"]), int(cfg["sites"])
    deadline = time.monotonic() + 120
    while len(nodes := sorted(grid.get_node_ids())) < n_sites:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(nodes)} of {n_sites} sites connected")
        time.sleep(1)
    t0 = time.perf_counter()
    asm = {n: P.BundleAssembler(total) for n in nodes}
    wire = 0
    for start, _ in P.chunk_ranges(total, chunk):
        req = P.PublishRequest(gate=GateConfig(), quota=total, max_attempts=total, study_id="load",
                               nonce=secrets.token_hex(16), chunk_images=chunk, offset=start)
        msgs = [Message(req.to_content(), dst_node_id=n, message_type=P.MSG_PUBLISH) for n in nodes]
        replies = list(grid.send_and_receive(msgs, timeout=600))
        if len(replies) != len(nodes) or any(r.has_error() for r in replies):
            raise RuntimeError(f"chunk at {start}: {len(replies)} replies, errors "
                               f"{[r.error.reason for r in replies if r.has_error()]}")
        for r in replies:
            wire += P.message_nbytes(r)
            c = P.PublishChunk.from_content(r.content)
            asm[r.metadata.src_node_id].add(c.offset, c.images)
    fetched = time.perf_counter() - t0
    for n in nodes:  # one object per site, as the pool stores a bundle
        images = asm.pop(n).images()
        np.save(out / f"bundle-{n}.npy", images)
        del images
    elapsed = time.perf_counter() - t0
    result = {"images": total * len(nodes), "size": int(cfg["size"]), "chunk_images": chunk, "sites": len(nodes),
              "payload_bytes": total * len(nodes) * int(cfg["size"]) ** 2 * 4, "wire_bytes": wire,
              "fetch_s": fetched, "total_s": elapsed,
              "serverapp_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    write_bytes_atomic(out / "result.json", json.dumps(result, indent=1).encode())
