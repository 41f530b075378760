"""The coordinator <-> site message protocol, in one place.

Every message of a study is a Flower ``Message`` whose ``message_type`` is one
of the constants in :mod:`.keys` and whose content is a ``RecordDict`` with the
record keys named there. Keeping the names and the (de)serialisation in one
package is what lets the site app, the coordinator and the leak test agree on
exactly what crosses the wire, and lets ``docs/architecture.md`` list it:
:mod:`.keys` (types, keys), :mod:`.messages` (typed requests and replies),
:mod:`.payloads` (image and blob records, chunking, bytes on the wire).

Large payloads (image stacks, model weights) always travel as ``Array``s in an
``ArrayRecord``: Flower splits every ``Array`` into 5 MiB chunks on the wire,
so a publish of thousands of images works in both engines. Opaque blobs (the
signed certificate, JSON) are carried as ``uint8`` arrays for the same reason;
``ConfigRecord`` bytes are not chunked and would stall on large values.

Beyond Flower's own 5 MiB wire chunks, a publish is *fetched in chunks* of
``chunk-images`` images: the coordinator asks for ``offset`` 0, 256, ... of
the site's cached bundle and reassembles them (:class:`BundleAssembler`), so
no single message, and no single buffer on either side, holds the whole
bundle. The signed certificate comes with the first chunk only.

Every request and reply has a typed model (:class:`PublishRequest`,
:class:`SiteInfo`, ...) with ``to_content()`` / ``from_content()``: the site
app and the coordinator never read a record key themselves, and anything
malformed is a :class:`ProtocolError` at the boundary.

Usage::

    content = PublishRequest(gate=gate, quota=120, ...).to_content()   # RecordDict
    req = PublishRequest.from_content(msg.content)                     # validated
    nbytes = message_nbytes(msg)                                       # bytes on the wire
"""

from __future__ import annotations

from fedsynth.federation.protocol import keys, messages, payloads  # noqa: E402
from fedsynth.federation.protocol.keys import (  # noqa: F401
    ACTION_PING,
    ACTION_PUBLISH,
    ACTION_TRAIN_GENERATOR,
    CERT_KEY,
    COMPANIONS_KEY,
    CONFIG_KEY,
    IMAGES_KEY,
    METRICS_KEY,
    MSG_EVALUATE,
    MSG_PING,
    MSG_PUBLISH,
    MSG_TRAIN,
    MSG_TRAIN_GENERATOR,
    PROTOCOL_VERSION,
    SITE_KEY,
    WEIGHTS_KEY,
    ProtocolError,
)
from fedsynth.federation.protocol.messages import (  # noqa: F401
    VALIDATION_SEED,
    EvaluateReply,
    EvaluateRequest,
    GeneratorReply,
    GeneratorRequest,
    PingRequest,
    PublishChunk,
    PublishRequest,
    SiteInfo,
    TrainReply,
    TrainRequest,
    evaluate_config,
    train_config,
    weights_of,
)
from fedsynth.federation.protocol.payloads import (  # noqa: F401
    BundleAssembler,
    blob_to_record,
    chunk_ranges,
    config_json,
    images_to_record,
    message_nbytes,
    record_to_blob,
    record_to_images,
    recorddict_nbytes,
    wire_roundtrip,
)

__all__ = [*keys.__all__, *messages.__all__, *payloads.__all__]
