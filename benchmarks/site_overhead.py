"""Per-message cost at a site: what a message costs beyond the work it asks for.

Drives the site ``ClientApp`` (``fedsynth.federation.client_app:app``, the
deployed daemon's app) in-process with real Flower messages, on one site of
the default study's cohort (8 patients x 24 slices, 64x64 CT) and the
default study's task (RED-CNN, 2 local epochs = one FedAvg round), and prints
a markdown table:

- ``ping``: a message that asks for counts only; its time is all overhead.
  *first* = the first message of a run (settings resolved, slice store
  opened); *next* = median of the following ones in the same run.
- ``train (1 round)``: one FedAvg round's ``train`` message at each of the
  study's three sites, against the obvious alternative in the same run: the
  same ``fit_epochs`` call on the same slices without a message. The
  difference is the message overhead.

The message format is the protocol's wire format, built here from plain Flower
records so the script runs unchanged against older checkouts (run it with
``PYTHONPATH=<checkout>`` to measure one).

    python benchmarks/site_overhead.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

SITES = 3


def _context(node_config: dict, run_id: int, node_id: int) -> Context:
    return Context(run_id=run_id, node_id=node_id, node_config=node_config, state=RecordDict(), run_config={})


def _send(app, context: Context, message_type: str, content: RecordDict) -> tuple[float, Message]:
    msg = Message(content, dst_node_id=context.node_id, message_type=message_type)
    t0 = time.perf_counter()
    reply = app(msg, context)
    dt = time.perf_counter() - t0
    if reply.has_error():
        raise RuntimeError(f"{message_type}: {reply.error.reason}")
    return dt, reply


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=20, help="pings per run (default 20)")
    ap.add_argument("--rounds", type=int, default=6, help="FedAvg rounds timed each way (default 6)")
    ap.add_argument("--work", type=Path, help="working directory (default: a temporary one)")
    args = ap.parse_args()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    torch.set_num_threads(1)  # as a simulated site

    from flwr.supercore.task_identity import TaskIdentity

    import fedsynth
    from fedsynth.data.cohort import make_cohort
    from fedsynth.federation import load_scenario
    from fedsynth.federation.client_app import app
    from fedsynth.privacy import generate_site_key
    from fedsynth.tasks import TaskConfig, build_network, fit_epochs

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    sc = load_scenario("default")
    task = TaskConfig.model_validate(sc.task if isinstance(sc.task, dict) else sc.task.model_dump())
    local_epochs = sc.training.check_every
    work = args.work or Path(tempfile.mkdtemp(prefix="site-overhead-"))
    c = sc.cohort
    make_cohort(c.modality, SITES, c.patients, work / "cohort", slices=c.slices, size=c.size, seed=c.seed,
                progress_bar=False)
    nodes = []
    for k in range(1, SITES + 1):
        wd = work / "sites" / f"site-{k}"
        if not (wd / "keys" / "site.key").is_file():
            generate_site_key(wd / "keys")
        nodes.append({"data-dir": str(work / "cohort" / f"site-{k}"), "workdir": str(wd), "modality": c.modality,
                      "image-size": c.size, "site-id": f"site-{k}", "partition-id": k - 1})
    ping = RecordDict({"config": ConfigRecord({"protocol": 1})})
    # warm every site's slice-store cache once (both versions cache the ingested slices on disk)
    for i, nc in enumerate(nodes):
        _send(app, _context(nc, 900 + i, 10 + i), "query.ping", ping)

    # 1. ping: first message of a run, then the following ones
    firsts, nexts = [], []
    for r in range(5):
        ctx = _context(nodes[0], 1000 + r, 10)
        firsts.append(_send(app, ctx, "query.ping", ping)[0])
        nexts += [_send(app, ctx, "query.ping", ping)[0] for _ in range(args.repeats)]

    # 2. one FedAvg round: a train message at every site vs fit_epochs directly
    torch.manual_seed(sc.seed)
    init = build_network(task).state_dict()
    cfg = ConfigRecord({"task": json.dumps(task.model_dump(mode="json"), sort_keys=True, separators=(",", ":")),
                        "local-epochs": local_epochs, "seed": sc.seed, "server-round": 1})
    contexts = [_context(nc, 2000, 10 + i) for i, nc in enumerate(nodes)]
    for ctx in contexts:  # the session's first message (a FedAvg round is never a run's first message)
        _send(app, ctx, "query.ping", ping)
    msg_s, direct_s = [], []
    from fedsynth.data import ingest_site

    stores = [ingest_site(Path(nc["data-dir"]), c.modality, out=Path(nc["workdir"]) / "slices", size=c.size,
                          train_fraction=0.75, seed=0, progress=False) for nc in nodes]

    def by_message() -> float:
        return sum(_send(app, ctx, "train", RecordDict({"arrays": ArrayRecord(init), "config": cfg}))[0]
                   for ctx in contexts)

    def direct() -> float:
        total = 0.0
        for store in stores:
            model = build_network(task)
            model.load_state_dict(init)
            t0 = time.perf_counter()
            fit_epochs(model, store.train_images(), task, local_epochs, sc.seed + 1)
            total += time.perf_counter() - t0
        return total

    by_message(), direct()  # warm torch's kernels
    for rep in range(args.rounds):  # interleaved, alternating which goes first
        if rep % 2:
            direct_s.append(direct())
            msg_s.append(by_message())
        else:
            msg_s.append(by_message())
            direct_s.append(direct())
    med = statistics.median
    print(f"fedsynth {fedsynth.__file__}  torch threads 1  cohort {SITES} sites x {c.patients} patients x "
          f"{c.slices} slices, {c.size}x{c.size}\n")
    print("| message | seconds | note |")
    print("| --- | ---: | --- |")
    print(f"| ping, first of a run (median of {len(firsts)}) | {med(firsts):.4f} | settings resolved, store opened |")
    print(f"| ping, next in the run (median of {len(nexts)}) | {med(nexts):.4f} | |")
    print(f"| ping first / next | {med(firsts) / med(nexts):.1f}x | |")
    diffs = [m - d for m, d in zip(msg_s, direct_s, strict=True)]
    print(f"| train, one FedAvg round ({SITES} sites x {local_epochs} epochs; median of {len(msg_s)}) | "
          f"{med(msg_s):.3f} | range {min(msg_s):.3f}-{max(msg_s):.3f} |")
    print(f"| fit_epochs on the same slices, no message | {med(direct_s):.3f} | the work itself; range "
          f"{min(direct_s):.3f}-{max(direct_s):.3f} |")
    print(f"| overhead of the round's {SITES} messages (median of paired differences) | {med(diffs):.3f} | "
          f"{100 * med(diffs) / med(direct_s):.1f} % of the work |")
    print(f"\nmean ping {np.mean(nexts) * 1e3:.1f} ms; work dir {work}")


if __name__ == "__main__":
    main()
