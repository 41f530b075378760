"""The site daemon: a Flower ``ClientApp`` answering the study protocol.

Each handler decodes the message, calls :mod:`fedsynth.federation.site_task`
and encodes the reply; see :mod:`fedsynth.federation.protocol` for the
records. A failure at the site is logged there in full but answered with the
exception's class name only: error text can carry file paths or patient ids.
Site settings come from the node config (``site-config`` = a site TOML, or
``data-dir``/``workdir``/``modality``) or, in simulation, from the study spec.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from fedsynth.federation import protocol as P
from fedsynth.federation import site_task
from fedsynth.federation.mods import audit_mod

__all__ = ["app", "build_client_app"]

log = logging.getLogger(__name__)


def _safe(handler: Callable[[site_task.SiteRuntime, Message], RecordDict]) -> Callable:
    def wrapped(msg: Message, context: Context) -> Message:
        try:
            rt = site_task.resolve_site(dict(context.node_config), dict(context.run_config))
            return Message(handler(rt, msg), reply_to=msg)
        except Exception as err:  # noqa: BLE001 - every failure becomes a redacted error reply
            log.exception("site handler %s failed", msg.metadata.message_type)
            reason = f"{type(err).__name__} at the site (details in the site log)"
            return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=msg)

    wrapped.__name__ = handler.__name__
    return wrapped


def _cfg(msg: Message) -> ConfigRecord:
    cfg = msg.content.get(P.CONFIG_KEY)
    return cfg if isinstance(cfg, ConfigRecord) else ConfigRecord()


def ping(rt: site_task.SiteRuntime, msg: Message) -> RecordDict:
    return RecordDict({P.SITE_KEY: ConfigRecord(site_task.site_info(rt))})


def train_generator(rt: site_task.SiteRuntime, msg: Message) -> RecordDict:
    cfg = _cfg(msg)
    res = site_task.train_generator(rt, str(cfg["profile"]), json.loads(str(cfg.get("overrides", "{}"))))
    return RecordDict({
        P.SITE_KEY: ConfigRecord({"site-id": rt.site_id, "checkpoint-hash": res["checkpoint-hash"],
                                  "skipped": res["skipped"]}),
        P.METRICS_KEY: MetricRecord({"seconds": float(res["seconds"])}),
    })


def publish(rt: site_task.SiteRuntime, msg: Message) -> RecordDict:
    """One chunk (``offset``, ``chunk-images``) of the site's gate-certified bundle.

    The bundle is generated and signed on the first request and cached at the
    site, so later chunks (and a restarted coordinator) read the same bundle.
    The signed certificate travels with the chunk at offset 0 only.
    """
    cfg = _cfg(msg)
    steps = int(cfg.get("sample-steps", 0)) or None
    images, signed, stats = site_task.publish(
        rt, json.loads(str(cfg["gate"])), int(cfg["quota"]), int(cfg["max-attempts"]),
        int(cfg.get("seed", 0)), steps,
    )
    offset = int(cfg.get("offset", 0))
    chunk = int(cfg.get("chunk-images", len(images))) or len(images)
    if not 0 <= offset < max(len(images), 1):
        raise P.ProtocolError(f"publish offset {offset} outside a bundle of {len(images)}")
    content = RecordDict({
        P.IMAGES_KEY: P.images_to_record(images[offset : offset + chunk]),
        P.SITE_KEY: ConfigRecord({"site-id": rt.site_id, "quota-met": bool(stats["quota-met"]),
                                  "offset": offset, "n-total": int(len(images))}),
        P.METRICS_KEY: MetricRecord({"n-accepted": int(stats["n-accepted"]),
                                     "n-rejected": int(stats.get("n-rejected", 0)),
                                     "acceptance-rate": float(stats["acceptance-rate"])}),
    })
    if offset == 0:
        content[P.CERT_KEY] = P.blob_to_record(json.dumps(signed, sort_keys=True).encode("utf-8"))
    return content


def _state_dict(msg: Message) -> dict:
    import torch  # noqa: F401 - Flower's to_torch_state_dict needs torch already imported

    return msg.content[P.WEIGHTS_KEY].to_torch_state_dict()


def train(rt: site_task.SiteRuntime, msg: Message) -> RecordDict:
    cfg = _cfg(msg)
    state = _state_dict(msg)
    new_state, metrics = site_task.train_local(
        rt, state, json.loads(str(cfg["task"])), int(cfg["local-epochs"]),
        int(cfg.get("seed", 0)) + int(cfg.get("server-round", 0)),
        float(cfg.get("proximal-mu", 0.0)),
    )
    return RecordDict({P.WEIGHTS_KEY: ArrayRecord(new_state), P.METRICS_KEY: MetricRecord(metrics)})


def evaluate(rt: site_task.SiteRuntime, msg: Message) -> RecordDict:
    cfg = _cfg(msg)
    state = _state_dict(msg)
    res = site_task.evaluate(rt, state, json.loads(str(cfg["task"])), int(cfg.get("seed", 0)))
    metrics: dict = {"num-examples": int(len(res["psnr"]))}
    for k, v in res.items():
        metrics[k] = [float(x) for x in np.asarray(v).ravel()]
        metrics[f"{k}-mean"] = float(np.mean(v)) if len(v) else 0.0
    return RecordDict({P.METRICS_KEY: MetricRecord(metrics)})


def _site_logging() -> None:
    # A site app runs in a Flower/Ray worker whose root logger has no handler:
    # give it one so the site's progress (phase, epoch, gate) reaches the log.
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def build_client_app(mods: tuple = (audit_mod,)) -> ClientApp:
    """The site app with its handlers registered (``mods`` wrap every message)."""
    _site_logging()
    client = ClientApp(mods=list(mods))
    client.query("ping")(_safe(ping))
    client.query("train_generator")(_safe(train_generator))
    client.query("publish")(_safe(publish))
    client.train()(_safe(train))
    client.evaluate()(_safe(evaluate))
    return client


app = build_client_app()
