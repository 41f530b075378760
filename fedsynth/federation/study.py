"""The coordinator's side of one federated study (DESIGN.md, "The flow of one federated study").

:class:`Study` drives the sites through a Flower ``Grid`` (metered, see
:mod:`fedsynth.federation.metering`) phase by phase:

1. ``site_info``       — ping every node, learn its site id and counts;
2. ``train_generators`` — every site trains (or resumes, or skips) its LDM;
3. ``publish``         — every site runs the gate to the quota; the bundle is
   fetched in chunks, its signature verified against the site's *registered*
   key, and the images added to the content-addressed pool;
4. ``synthetic_pool``  — the central network trained on the pool here;
5. ``fedavg`` / ``fedprox`` (or ``fedadam``) — Flower strategies on the sites'
   real data, same network, same total local epochs as the pool's epochs;
6. ``local_only``      — each site trains alone for the same epochs;
7. ``centralised_real`` — union of every site's real training data (simulation
   only: it reads the sites' stores, which no deployment can do);
8. ``evaluation``      — every model to every site; only metrics come back;
9. ``report``          — ``report.json`` + ``report.html``.

Everything durable lives in the study directory: ``pool/`` (images +
SQLite manifest), ``models/<method>.pt`` and ``coordinator/state.json``
(finished phases, evaluation results, bytes, wall times), so a coordinator
that dies mid-study resumes where it stopped and never asks a site to redo
finished work. Sites that fail or time out are dropped and named in the
report; the study stops only when fewer than ``min_sites`` remain.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedsynth.errors import FedsynthError, GateError
from fedsynth.federation import protocol as P
from fedsynth.federation.config import ScenarioConfig
from fedsynth.federation.metering import MeteredGrid
from fedsynth.federation.pool import SyntheticPool
from fedsynth.io_utils import write_json_atomic

__all__ = ["METHOD_LABELS", "Study", "StudyError", "StudySpec"]

log = logging.getLogger(__name__)

#: Human labels of the methods (the report's notes use them).
METHOD_LABELS = {
    "synthetic-pool": "central network trained on the pool of gate-certified synthetic images",
    "fedavg": "FedAvg on the sites' real training data",
    "fedprox": "FedProx on the sites' real training data",
    "fedadam": "FedAdam on the sites' real training data",
    "local-only": "each site alone on its own real data (scored on its own test set)",
    "centralised-real": "union of all sites' real training data: upper bound, simulation only, NOT deployable",
}


class StudyError(FedsynthError):
    """The study cannot go on (e.g. fewer than ``min_sites`` sites remain)."""


@dataclass
class StudySpec:
    """What the coordinator needs besides the scenario."""

    scenario: ScenarioConfig
    out: Path
    site_keys: Path
    mode: str = "simulation"  # or "deployment"
    expected_sites: int | None = None
    min_sites: int | None = None
    connect_timeout_s: float = 600.0
    load_public_key: Callable[[Path], Any] | None = None

    @property
    def n_expected(self) -> int:
        return self.expected_sites or self.scenario.cohort.sites

    @property
    def n_min(self) -> int:
        return self.min_sites or self.scenario.min_sites


@dataclass
class _Site:
    node_id: int
    site_id: str
    info: dict[str, Any] = field(default_factory=dict)


class Study:
    """Runs one study on ``grid``; see the module docstring."""

    def __init__(self, grid: Grid, spec: StudySpec) -> None:
        self.spec = spec
        self.sc = spec.scenario
        self.grid = MeteredGrid(grid)
        self.out = Path(spec.out)
        self.state_path = self.out / "coordinator" / "state.json"
        self.models_dir = self.out / "models"
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.pool = SyntheticPool(self.out / "pool")
        self.sites: dict[int, _Site] = {}
        self.missing: dict[str, str] = {}
        self.state = self._load_state()
        self.task_cfg = self.sc.task_config()
        self.gate_cfg = self.sc.gate_config()
        self._bytes0 = {k: dict(v) for k, v in self.state.get("bytes", {}).items()}

    # ----------------------------------------------------------------- state
    def _load_state(self) -> dict[str, Any]:
        if self.state_path.is_file():
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
            log.info("study: resuming from %s (done: %s)", self.state_path, ", ".join(state.get("done", [])))
            return state
        return {"done": [], "wall_seconds": {}, "bytes": {}, "evaluations": {}, "privacy": {}, "missing": {}}

    def _save_state(self) -> None:
        totals = {k: dict(v) for k, v in self._bytes0.items()}
        for k, v in self.grid.totals().items():
            slot = totals.setdefault(k, {"sent": 0, "received": 0})
            slot["sent"] += v["sent"]
            slot["received"] += v["received"]
        self.state["bytes"] = totals
        self.state["missing"] = dict(self.missing)
        write_json_atomic(self.state_path, self.state)

    def _phase(self, name: str, fn: Callable[[], None]) -> None:
        if name in self.state["done"]:
            log.info("phase %s: already finished, skipped (resume)", name)
            return
        log.info("phase %s: start", name)
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        self.state["wall_seconds"][name] = self.state["wall_seconds"].get(name, 0.0) + dt
        self.state["done"].append(name)
        self._save_state()
        log.info("phase %s: done in %.1f s", name, dt)

    # ----------------------------------------------------------------- sites
    def _alive(self) -> list[_Site]:
        return [s for s in self.sites.values() if s.site_id not in self.missing]

    def _drop(self, site: _Site, why: str) -> None:
        log.warning("site %s dropped from the study: %s", site.site_id, why)
        self.missing[site.site_id] = why
        self.grid.allowed_nodes = {s.node_id for s in self._alive()}
        if len(self._alive()) < self.spec.n_min:
            self._save_state()
            raise StudyError(
                f"only {len(self._alive())} site(s) remain, fewer than min_sites={self.spec.n_min} "
                f"(missing: {', '.join(f'{k} ({v})' for k, v in sorted(self.missing.items()))})"
            )

    def _ask(
        self, sites: list[_Site], message_type: str, content: Callable[[_Site], RecordDict], timeout: float,
        errors: dict[str, str] | None = None,
    ) -> dict[str, Message]:
        """Send one message per site, wait, drop sites that fail or time out; replies by site id.

        With ``errors`` given, an error reply is recorded there instead of
        dropping the site (a gate that publishes nothing is a privacy outcome,
        not a site failure: the site still takes part in the baselines).
        """
        msgs = [Message(content(s), dst_node_id=s.node_id, message_type=message_type) for s in sites]
        by_node = {s.node_id: s for s in sites}
        replies = list(self.grid.send_and_receive(msgs, timeout=timeout))
        out: dict[str, Message] = {}
        for r in replies:
            site = by_node.get(r.metadata.src_node_id)
            if site is None:
                continue
            if r.has_error() and errors is not None:
                errors[site.site_id] = f"{message_type} failed: {r.error.reason}"
                log.warning("site %s: %s", site.site_id, errors[site.site_id])
            elif r.has_error():
                self._drop(site, f"{message_type} failed: {r.error.reason}")
            else:
                out[site.site_id] = r
        for s in sites:
            if s.site_id not in out and s.site_id not in self.missing and s.site_id not in (errors or {}):
                self._drop(s, f"no reply to {message_type} within {timeout:.0f} s")
        return out

    def _connect(self) -> None:
        t0 = time.time()
        want = self.spec.n_expected
        while True:
            ids = list(self.grid.get_node_ids())
            if len(ids) >= want or time.time() - t0 > self.spec.connect_timeout_s:
                break
            log.info("waiting for sites: %d of %d connected", len(ids), want)
            time.sleep(2.0)
        if len(ids) < self.spec.n_min:
            raise StudyError(f"only {len(ids)} site(s) connected, fewer than min_sites={self.spec.n_min}")
        ping = RecordDict({P.CONFIG_KEY: ConfigRecord({"protocol": P.PROTOCOL_VERSION})})
        msgs = [Message(ping, dst_node_id=i, message_type=P.MSG_PING) for i in ids]
        with self.grid.method("setup"):
            replies = list(self.grid.send_and_receive(msgs, timeout=self.sc.site_timeout_s))
        for r in replies:
            if r.has_error():
                log.warning("node %s: site info failed: %s", r.metadata.src_node_id, r.error.reason)
                continue
            info = dict(r.content[P.SITE_KEY])
            self.sites[r.metadata.src_node_id] = _Site(r.metadata.src_node_id, str(info["site-id"]), info)
        answered = {s.site_id for s in self.sites.values()}
        for k in range(1, self.spec.n_expected + 1):
            if self.spec.mode == "simulation" and f"site-{k}" not in answered:
                self.missing[f"site-{k}"] = "did not answer the site-info request"
        for s in sorted(self._alive(), key=lambda s: s.site_id):
            log.info("site %s: %s train / %s test slices, %spx", s.site_id, s.info.get("n-train"),
                     s.info.get("n-test"), s.info.get("image-size"))
        self.grid.allowed_nodes = {s.node_id for s in self._alive()}
        if len(self._alive()) < self.spec.n_min:
            raise StudyError(f"only {len(self._alive())} site(s) answered, fewer than min_sites={self.spec.n_min}")

    # ------------------------------------------------------------- generative
    def _train_generators(self) -> None:
        g = self.sc.generator
        cfg = ConfigRecord({"profile": g.profile, "overrides": json.dumps(g.overrides, sort_keys=True)})
        with self.grid.method("synthetic-pool"):
            replies = self._ask(self._alive(), P.MSG_TRAIN_GENERATOR,
                                lambda s: RecordDict({P.CONFIG_KEY: cfg}), self.sc.site_timeout_s)
        for sid, r in sorted(replies.items()):
            info = r.content[P.SITE_KEY]
            log.info("site %s: generator %s (%s)", sid, str(info["checkpoint-hash"])[:12],
                     "cached" if info["skipped"] else f"{r.content[P.METRICS_KEY]['seconds']:.0f} s")

    def _publish(self) -> None:
        pub = self.sc.publish
        base = {"gate": P.config_json(self.gate_cfg), "quota": pub.quota,
                "max-attempts": pub.candidate_limit(), "seed": self.sc.seed,
                "sample-steps": int(self.sc.generator.sample_steps or 0), "chunk-images": pub.chunk_images}
        todo = [s for s in self._alive() if not self.pool.bundles(site=s.site_id, verified=True)]
        for s in self._alive():
            if s not in todo:
                log.info("site %s: bundle already pooled (%d images), not asked again", s.site_id,
                         self.pool.count(s.site_id))
        failed = self.state.setdefault("rejected_bundles", {})
        with self.grid.method("synthetic-pool"):
            first = self._ask(todo, P.MSG_PUBLISH,
                              lambda s: RecordDict({P.CONFIG_KEY: ConfigRecord({**base, "offset": 0})}),
                              self.sc.site_timeout_s, errors=failed)
            for s in todo:
                if s.site_id in first:
                    self._fetch_bundle(s, first[s.site_id], base)
        for s in self._alive():
            self.state["privacy"][s.site_id] = self._privacy_row(s.site_id)
        if self.pool.count() == 0:
            raise StudyError("no site published an accepted bundle; the pool is empty")

    def _fetch_bundle(self, site: _Site, first: Message, base: dict[str, Any]) -> None:
        info = first.content[P.SITE_KEY]
        total = int(info["n-total"])
        asm = P.BundleAssembler(total)
        asm.add(0, P.record_to_images(first.content[P.IMAGES_KEY]))
        signed = None
        if P.CERT_KEY in first.content:
            try:
                signed = json.loads(P.record_to_blob(first.content[P.CERT_KEY]).decode("utf-8"))
            except (ValueError, P.ProtocolError):
                signed = None
        for start, _ in P.chunk_ranges(total, base["chunk-images"])[1:]:
            log.info("site %s: fetching images %d-%d of %d", site.site_id, start,
                     min(start + base["chunk-images"], total), total)
            rep = self._ask([site], P.MSG_PUBLISH,
                            lambda s, o=start: RecordDict({P.CONFIG_KEY: ConfigRecord({**base, "offset": o})}),
                            self.sc.site_timeout_s)
            if site.site_id not in rep:
                return
            asm.add(int(rep[site.site_id].content[P.SITE_KEY]["offset"]),
                    P.record_to_images(rep[site.site_id].content[P.IMAGES_KEY]))
        images = asm.images()
        key_path = self.spec.site_keys / f"{site.site_id}.pub"
        try:
            if not key_path.is_file():
                raise GateError(f"no registered public key for {site.site_id} ({key_path.name})")
            loader = self.spec.load_public_key or _default_key_loader
            rec = self.pool.add_bundle(site.site_id, images, signed or {}, loader(key_path))
            log.info("site %s: %d images verified and pooled (%d new)", site.site_id, rec.n_images, rec.n_new)
        except GateError as err:
            log.error("site %s: bundle REJECTED: %s", site.site_id, err)
            self.state.setdefault("rejected_bundles", {})[site.site_id] = str(err)

    def _privacy_row(self, site_id: str) -> dict[str, Any]:
        bundles = self.pool.bundles(site=site_id, verified=True)
        if not bundles:
            return {"threshold": None, "min_nn_distance": None, "n_published": 0, "n_rejected": None,
                    "status": self.state.get("rejected_bundles", {}).get(site_id, "no bundle")}
        cert = bundles[-1]["certificate"]["certificate"]
        summ = cert.get("summary", {})
        return {
            "threshold": {m: float(v["threshold"]) for m, v in cert.get("metrics", {}).items()},
            "min_nn_distance": summ.get("min_nearest_published"),
            "n_published": self.pool.count(site_id),
            "n_rejected": summ.get("n_rejected"),
            "acceptance_rate": summ.get("acceptance_rate"),
            "quota_met": summ.get("quota_met"),
        }

    # --------------------------------------------------------------- training
    def _model_path(self, method: str) -> Path:
        return self.models_dir / f"{method}.pt"

    def _initial_state(self) -> dict[str, Any]:
        import torch

        from fedsynth.tasks import build_network

        torch.manual_seed(self.sc.seed)
        return build_network(self.task_cfg).state_dict()

    def _save_model(self, method: str, state: dict[str, Any]) -> None:
        from fedsynth.tasks import build_network, save_network

        model = build_network(self.task_cfg)
        model.load_state_dict(state)
        save_network(model, self.task_cfg, self._model_path(method))

    def _train_central(self, method: str, images: np.ndarray) -> None:
        import torch

        from fedsynth.tasks import build_network, fit_epochs

        if self.sc.training.coordinator_threads > 0:
            torch.set_num_threads(self.sc.training.coordinator_threads)
        model = build_network(self.task_cfg)
        model.load_state_dict(self._initial_state())
        ep = self.sc.training.epochs
        log.info("%s: %d epochs on %d images", method, ep, len(images))
        res = fit_epochs(model, images, self.task_cfg, ep, self.sc.seed)
        log.info("%s: final loss %.5f", method, float(res["loss"]))
        self._save_model(method, model.state_dict())

    def _synthetic_pool(self) -> None:
        self._train_central("synthetic-pool", self.pool.images())

    def _train_config(self, epochs: int) -> ConfigRecord:
        return ConfigRecord({"task": P.config_json(self.task_cfg), "local-epochs": int(epochs),
                             "seed": int(self.sc.seed)})

    def _strategy(self, name: str) -> None:
        import torch  # noqa: F401 - Flower's to_torch_state_dict needs torch already imported
        from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx

        if self._model_path(name).is_file():
            log.info("%s: model already trained (resume)", name)
            return
        t = self.sc.training
        n = len(self._alive())
        common = dict(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n,
                      min_evaluate_nodes=n, min_available_nodes=n)
        if name == "fedavg":
            strategy = FedAvg(**common)
        elif name == "fedprox":
            strategy = FedProx(**common, proximal_mu=t.proximal_mu)
        else:
            strategy = FedAdam(**common)
        log.info("%s: %d rounds x %d local epochs on %d sites", name, t.rounds, t.epochs // t.rounds, n)
        with self.grid.method(name):
            result = strategy.start(
                grid=self.grid, initial_arrays=ArrayRecord(self._initial_state()), num_rounds=t.rounds,
                timeout=self.sc.site_timeout_s, train_config=self._train_config(t.epochs // t.rounds),
            )
        self._save_model(name, result.arrays.to_torch_state_dict())

    def _local_only(self) -> None:
        todo = [s for s in self._alive() if not self._model_path(f"local-{s.site_id}").is_file()]
        init = ArrayRecord(self._initial_state())
        cfg = self._train_config(self.sc.training.epochs)
        with self.grid.method("local-only"):
            replies = self._ask(todo, P.MSG_TRAIN,
                                lambda s: RecordDict({P.WEIGHTS_KEY: init, P.CONFIG_KEY: cfg}),
                                self.sc.site_timeout_s)
        for sid, r in replies.items():
            self._save_model(f"local-{sid}", r.content[P.WEIGHTS_KEY].to_torch_state_dict())

    def _centralised(self) -> None:
        from fedsynth.federation.site_task import open_site_store, resolve_site

        if self.spec.mode != "simulation":
            log.info("centralised-real: skipped (simulation only)")
            return
        stores = []
        for i in range(self.sc.cohort.sites):
            rt = resolve_site({"partition-id": i}, {"out": str(self.out)})
            if rt.site_id in self.missing:
                continue
            stores.append(open_site_store(rt).train_images())
        self._train_central("centralised-real", np.concatenate(stores, axis=0))

    # ------------------------------------------------------------- evaluation
    def _models(self) -> dict[str, Path]:
        names = ["synthetic-pool", "fedavg", self.sc.training.second_strategy, "centralised-real"]
        names += [f"local-{s.site_id}" for s in sorted(self._alive(), key=lambda s: s.site_id)]
        return {n: self._model_path(n) for n in names if self._model_path(n).is_file()}

    def _evaluate(self) -> None:
        from fedsynth.tasks import load_network

        evals = self.state["evaluations"]
        cfg = ConfigRecord({"task": P.config_json(self.task_cfg), "seed": int(self.sc.seed) + 7919})
        for name, path in self._models().items():
            todo = [s for s in self._alive() if s.site_id not in evals.get(name, {})]
            if not todo:
                continue
            model, _ = load_network(path)
            arrays = ArrayRecord(model.state_dict())
            log.info("evaluation: %s on %s", name, ", ".join(s.site_id for s in todo))
            with self.grid.method("evaluation"):
                replies = self._ask(todo, P.MSG_EVALUATE,
                                    lambda s, a=arrays: RecordDict({P.WEIGHTS_KEY: a, P.CONFIG_KEY: cfg}),
                                    self.sc.site_timeout_s)
            for sid, r in replies.items():
                m = r.content[P.METRICS_KEY]
                evals.setdefault(name, {})[sid] = {k: list(m[k]) for k in ("psnr", "ssim", "rmse")}
            self._save_state()

    # ----------------------------------------------------------------- report
    def report(self) -> dict[str, Any]:
        """``report.json`` content with the DESIGN.md keys (plus notes, labels and extras)."""
        evals = self.state["evaluations"]
        alive = sorted(s.site_id for s in self._alive()) or sorted(
            {sid for per in evals.values() for sid in per})
        from fedsynth.report import compare, summarise

        seed = self.sc.seed
        names = ("synthetic-pool", "fedavg", self.sc.training.second_strategy, "centralised-real")
        per_method: dict[str, Any] = {name: evals[name] for name in names if name in evals}
        local = {sid: evals[f"local-{sid}"][sid] for sid in alive
                 if sid in evals.get(f"local-{sid}", {})}
        if local:
            per_method["local-only"] = local
        methods = {name: {**block, "label": METHOD_LABELS[name]}
                   for name, block in summarise(per_method, seed=seed).items()}
        cross = {name: block["per_site"] for name, block in summarise(
            {f"local-{sid}": evals[f"local-{sid}"] for sid in alive if f"local-{sid}" in evals}, seed=seed).items()}
        comparisons: list[dict[str, Any]] = []
        if "synthetic-pool" in per_method:
            for other in ("fedavg", self.sc.training.second_strategy, "centralised-real", "local-only"):
                if other in per_method:
                    pair = {"synthetic-pool": per_method["synthetic-pool"], other: per_method[other]}
                    comparisons += compare(pair, reference_method=other, margins=self.sc.margins, seed=seed)
        b = self.state["bytes"]
        comm = {k: {**v, "total": v["sent"] + v["received"]} for k, v in sorted(b.items())}
        t = self.sc.training
        return {
            "scenario": self.sc.name,
            "task": self.task_cfg.task,
            "network": self.task_cfg.network,
            "mode": self.spec.mode,
            "sites": alive,
            "missing_sites": dict(sorted(self.missing.items())),
            "methods": methods,
            "local_only_cross_site": cross,
            "comparisons": comparisons,
            "privacy": self.state["privacy"],
            "rejected_bundles": self.state.get("rejected_bundles", {}),
            "communication_bytes": comm,
            "wall_seconds": {**self.state["wall_seconds"],
                             "total": float(sum(self.state["wall_seconds"].values()))},
            "notes": [
                f"Fairness: every method trains the same network ({self.task_cfg.network}) from the same "
                f"initial weights for the same number of epochs: synthetic-pool, centralised-real and "
                f"local-only run {t.epochs} epochs; FedAvg and {t.second_strategy} run {t.rounds} rounds "
                f"x {t.epochs // t.rounds} local epochs = {t.epochs} local epochs at every site.",
                "centralised-real reads every site's real training slices in one place: an upper bound "
                "that exists only in simulation and is not deployable.",
                "communication_bytes count the serialised Flower messages (every object as pushed on the "
                "wire) sent and received by the coordinator; synthetic-pool includes generator training "
                "requests and the chunked publish; evaluation is counted separately.",
                "All models are scored on the same held-out real test slices of every site, degraded with "
                "the same seed, so per-image comparisons are paired.",
            ],
        }

    def _write_report(self) -> None:
        rep = self.report()
        write_json_atomic(self.out / "report.json", rep)
        samples = {f"synthetic {s}": self.pool.images(s)[:8] for s in self.pool.sites()}
        _render_html(rep, self.out, {"samples": samples} if samples else None)
        log.info("report: %s", self.out / "report.json")

    # -------------------------------------------------------------------- run
    def run(self) -> dict[str, Any]:
        """Run (or resume) every phase; returns the report dict."""
        t0 = time.perf_counter()
        self._connect()
        self.state["wall_seconds"]["site_info"] = time.perf_counter() - t0
        self._phase("train_generators", self._train_generators)
        self._phase("publish", self._publish)
        self._phase("synthetic_pool", self._synthetic_pool)
        self._phase("fedavg", lambda: self._strategy("fedavg"))
        second = self.sc.training.second_strategy
        self._phase(second, lambda: self._strategy(second))
        if self.sc.training.local_only:
            self._phase("local_only", self._local_only)
        if self.sc.training.centralised:
            self._phase("centralised_real", self._centralised)
        self._phase("evaluation", self._evaluate)
        t1 = time.perf_counter()
        self._write_report()
        self.state["wall_seconds"]["report"] = time.perf_counter() - t1
        self._save_state()
        self._write_report()
        return self.report()


def _default_key_loader(path: Path) -> Any:
    from fedsynth.privacy import load_public_key

    return load_public_key(path)


def _render_html(report: dict[str, Any], out: Path, figures: dict[str, Any] | None = None) -> None:
    """``report.html`` via :func:`fedsynth.report.render_html`.

    ``report.json`` is already written when this runs, so a rendering failure
    loses nothing: it is logged with the command that retries it.
    """
    from fedsynth.report import render_html

    try:
        render_html(report, out / "report.html", figures)
    except Exception as err:  # noqa: BLE001 - the study's results are in report.json
        log.error("report.html not written (%s: %s); report.json is complete, retry with: fedsynth report %s",
                  type(err).__name__, err, out)
