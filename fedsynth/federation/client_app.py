"""The site daemon: a Flower ``ClientApp`` answering the study protocol.

Each handler decodes the message into its typed request
(:mod:`fedsynth.federation.protocol`), calls :mod:`fedsynth.federation.site_actions`
with the node's session (:mod:`fedsynth.federation.site_session`: settings
resolved and data opened once per run) and encodes the typed reply. A
failure at the site is logged there in full but answered with the
exception's class name only: error text can carry file paths or patient ids.
The one exception is a refusal by the site's privacy policy, whose reason is
built from configuration values only and must reach the coordinator's report.

``app`` reads the site's settings from the node config (a site TOML, or
``data-dir``/``workdir``/``modality``) or the run config's study
(``flwr run .``); :func:`build_client_app` with ``study_dir`` makes the app
of one simulated study (``fedsynth simulate``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from fedsynth.federation import protocol as P
from fedsynth.federation import site_actions as act
from fedsynth.federation.mods import make_audit_mod
from fedsynth.federation.site_session import SiteSession, site_session
from fedsynth.federation.study_dir import StudyLayout
from fedsynth.privacy.policy import PolicyRefusal
from fedsynth.runtime import log_to_file, setup_logging

__all__ = ["app", "build_client_app"]

log = logging.getLogger(__name__)

Handler = Callable[[SiteSession, Message, Context], RecordDict]


def _ping(s: SiteSession, msg: Message, context: Context) -> RecordDict:
    return act.site_info(s).to_content()


def _train_generator(s: SiteSession, msg: Message, context: Context) -> RecordDict:
    return act.train_generator(s, P.GeneratorRequest.from_content(msg.content)).to_content()


def _publish(s: SiteSession, msg: Message, context: Context) -> RecordDict:
    return act.publish(s, P.PublishRequest.from_content(msg.content)).to_content()


def _train(s: SiteSession, msg: Message, context: Context) -> RecordDict:
    # context.state: Flower keeps it per node across the run's messages (the client optimiser's home)
    return act.train(s, P.TrainRequest.from_content(msg.content), P.weights_of(msg.content),
                     context.state).to_content()


def _evaluate(s: SiteSession, msg: Message, context: Context) -> RecordDict:
    return act.evaluate(s, P.EvaluateRequest.from_content(msg.content), P.weights_of(msg.content)).to_content()


def _simulated_study(context: Context) -> Path | None:
    """The study directory of a site simulated by ``flwr run`` (``out`` in the run config), else None."""
    out = str(context.run_config.get("out", "") or "")
    if not out or "partition-id" not in context.node_config or "site-config" in context.node_config:
        return None
    return Path(out)


def build_client_app(study_dir: Path | None = None, audit: bool = True) -> ClientApp:
    """The site app with its handlers registered.

    ``study_dir`` binds the app to one simulated study (its sites are derived
    from ``study_dir/study.json``); ``audit`` wraps every message in the
    audit mod, which keeps a copy of each reply where the site's config says.
    """
    setup_logging(only_if_unconfigured=True)  # a Flower/Ray worker's root logger has no handler

    def safe(handler: Handler) -> Callable[[Message, Context], Message]:
        def wrapped(msg: Message, context: Context) -> Message:
            simulated = study_dir or _simulated_study(context)
            if simulated is not None:  # a simulated site: its log goes into the study directory
                log_to_file(StudyLayout(simulated).site_log)
            try:
                return Message(handler(site_session(context, study_dir), msg, context), reply_to=msg)
            except PolicyRefusal as err:  # built from config values only: the coordinator must see why
                log.warning("site handler %s: %s", msg.metadata.message_type, err)
                return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"PolicyRefusal: {err}"), reply_to=msg)
            except Exception as err:  # noqa: BLE001 - every other failure becomes a redacted error reply
                log.exception("site handler %s failed", msg.metadata.message_type)
                reason = f"{type(err).__name__} at the site (details in the site log)"
                return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=msg)

        wrapped.__name__ = handler.__name__
        return wrapped

    client = ClientApp(mods=[make_audit_mod(study_dir)] if audit else [])
    client.query(P.ACTION_PING)(safe(_ping))
    client.query(P.ACTION_TRAIN_GENERATOR)(safe(_train_generator))
    client.query(P.ACTION_PUBLISH)(safe(_publish))
    client.train()(safe(_train))
    client.evaluate()(safe(_evaluate))
    return client


app = build_client_app()
