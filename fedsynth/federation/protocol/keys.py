"""Message types and record keys of the study protocol (see :mod:`fedsynth.federation.protocol`)."""

from __future__ import annotations

from flwr.app import MessageType

from fedsynth.errors import FedsynthError

__all__ = [
    "ACTION_PING",
    "ACTION_PUBLISH",
    "ACTION_TRAIN_GENERATOR",
    "CERT_KEY",
    "CONFIG_KEY",
    "IMAGES_KEY",
    "COMPANIONS_KEY",
    "METRICS_KEY",
    "MSG_EVALUATE",
    "MSG_PING",
    "MSG_PUBLISH",
    "MSG_TRAIN",
    "MSG_TRAIN_GENERATOR",
    "PROTOCOL_VERSION",
    "SITE_KEY",
    "WEIGHTS_KEY",
    "ProtocolError",
]

#: Bumped when a record key or message type changes meaning.
PROTOCOL_VERSION = 1

# Site actions: ``query.<action>`` is dispatched by ``@app.query("<action>")`` at the site.
ACTION_PING = "ping"
ACTION_TRAIN_GENERATOR = "train_generator"
ACTION_PUBLISH = "publish"

# Message types.
MSG_PING = f"{MessageType.QUERY}.{ACTION_PING}"
MSG_TRAIN_GENERATOR = f"{MessageType.QUERY}.{ACTION_TRAIN_GENERATOR}"
MSG_PUBLISH = f"{MessageType.QUERY}.{ACTION_PUBLISH}"
MSG_TRAIN = MessageType.TRAIN  # FedAvg-family local training on real data
MSG_EVALUATE = MessageType.EVALUATE  # metrics of given weights on the held-out test set

# Record keys. ``arrays``/``config``/``metrics`` are the names Flower's strategies use.
CONFIG_KEY = "config"  # ConfigRecord: small scalars and short JSON strings
WEIGHTS_KEY = "arrays"  # ArrayRecord: a torch state dict
METRICS_KEY = "metrics"  # MetricRecord: numbers (per-image metric lists allowed)
IMAGES_KEY = "images"  # ArrayRecord {"images": (n, H, W) float32}
COMPANIONS_KEY = "companions"  # ArrayRecord {"images": (n, H, W)}: the published images' certified companions
CERT_KEY = "certificate"  # ArrayRecord {"blob": uint8 JSON of the signed certificate}
SITE_KEY = "site"  # ConfigRecord: public facts about a site (id, modality, counts)

_IMAGES_ARRAY = "images"
_BLOB_ARRAY = "blob"


class ProtocolError(FedsynthError):
    """A message does not carry the records the protocol requires."""


