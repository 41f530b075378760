"""The site daemon in-process: one session per run, the site's own audit directory, redacted errors.

Messages go through the real ``ClientApp`` (as a SuperNode would call it),
built from plain Flower records in the protocol's wire format.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fixtures.federation import site_toml
from flwr.app import ConfigRecord, Context, Message, RecordDict

from fedsynth.federation import protocol as P
from fedsynth.federation.client_app import build_client_app

pytestmark = pytest.mark.usefixtures("flower_message_context")


def _site_toml(tmp: Path, audit: bool = True) -> Path:
    return site_toml(tmp, daemon_keys=f'audit_dir = "{tmp / "outgoing"}"' if audit else "")


def _ping(app, context: Context) -> Message:
    msg = Message(P.PingRequest().to_content(), dst_node_id=context.node_id, message_type=P.MSG_PING)
    return app(msg, context)


def _context(node_config: dict, run_id: int = 7) -> Context:
    return Context(run_id=run_id, node_id=3, node_config=node_config, state=RecordDict(), run_config={})


def test_site_toml_audit_dir_reaches_the_audit_mod(tmp_path: Path) -> None:
    app = build_client_app()
    reply = _ping(app, _context({"site-config": str(_site_toml(tmp_path))}))
    info = P.SiteInfo.from_content(reply.content)
    assert info.site_id == "hospital-a" and info.n_train > 0 and info.n_test > 0 and info.image_size == 32
    records = [d for d in (tmp_path / "outgoing").iterdir() if d.is_dir()]
    assert len(records) == 1
    meta = json.loads((records[0] / "meta.json").read_text())
    assert meta["message_type"] == P.MSG_PING and meta["records"]["site"]["values"]["site-id"] == "hospital-a"
    assert (records[0] / "wire.bin").stat().st_size > 0


def test_no_audit_dir_means_no_audit_copy(tmp_path: Path) -> None:
    app = build_client_app()
    _ping(app, _context({"site-config": str(_site_toml(tmp_path, audit=False))}))
    assert not (tmp_path / "outgoing").exists()


def test_a_run_resolves_the_site_and_opens_its_data_once(tmp_path: Path) -> None:
    """After the first message of a run the site's config and volumes are not read again; a new run re-reads."""
    app = build_client_app(audit=False)
    toml = _site_toml(tmp_path, audit=False)
    first = _ping(app, _context({"site-config": str(toml)}))
    assert not first.has_error()
    toml.unlink()  # the config is gone ...
    shutil.rmtree(tmp_path / "data")  # ... and so are the volumes
    again = _ping(app, _context({"site-config": str(toml)}))
    assert not again.has_error()
    assert P.SiteInfo.from_content(again.content) == P.SiteInfo.from_content(first.content)
    fresh = _ping(app, _context({"site-config": str(toml)}, run_id=8))  # a new run resolves again
    assert fresh.has_error()


def test_site_errors_are_redacted_to_the_exception_class(tmp_path: Path) -> None:
    app = build_client_app(audit=False)
    secret = tmp_path / "patient-p001-secret"
    reply = _ping(app, _context({"site-config": str(secret / "site.toml")}))
    assert reply.has_error()
    assert reply.error.reason == "ConfigError at the site (details in the site log)"
    assert "p001" not in reply.error.reason


def _publish(app, ctx, gate: dict, quota: int = 3, attempts: int = 9) -> Message:
    content = RecordDict({P.CONFIG_KEY: ConfigRecord({"gate": json.dumps(gate), "quota": quota,
                                                      "max-attempts": attempts, "study-id": "s1",
                                                      "nonce": "n" * 32})})
    return app(Message(content, dst_node_id=3, message_type=P.MSG_PUBLISH), ctx)


def test_malformed_or_zero_threshold_requests_are_refused_at_the_site(tmp_path: Path) -> None:
    app = build_client_app(audit=False)
    ctx = _context({"site-config": str(_site_toml(tmp_path, audit=False))})
    bad = RecordDict({P.CONFIG_KEY: ConfigRecord({"gate": "{not json", "quota": 3, "max-attempts": 3})})
    reply = app(Message(bad, dst_node_id=3, message_type=P.MSG_PUBLISH), ctx)
    assert reply.has_error() and reply.error.reason.startswith("ProtocolError")
    for gate in ({"metrics": ["pixel_rmse"], "mode": "absolute"},  # no threshold
                 {"metrics": ["pixel_rmse", "ncc_robust"], "mode": "absolute",
                  "thresholds": {"pixel_rmse": 0.0, "ncc_robust": 0.0}}):  # zero: would certify exact copies
        reply = _publish(app, ctx, gate)
        assert reply.has_error() and reply.error.reason.startswith("ProtocolError"), gate


def test_a_request_weaker_than_the_site_policy_is_refused_with_its_reason(tmp_path: Path) -> None:
    """The refusal names the field (no data), so it can reach the coordinator's report."""
    toml = _site_toml(tmp_path, audit=False)
    toml.write_text(toml.read_text() + "[privacy]\nmin_percentile = 20\nmax_images = 50\n")
    app = build_client_app(audit=False)
    reply = _publish(app, _context({"site-config": str(toml)}), {"metrics": ["pixel_rmse"]}, quota=80)
    assert reply.has_error()
    reason = reply.error.reason
    assert reason.startswith("PolicyRefusal: refused by the site's privacy policy"), reason
    for part in ("lack the required ['ncc_robust']", "percentile 5 is below the floor 20", "quota 80 exceeds"):
        assert part in reason, reason
    assert str(tmp_path) not in reason
    assert not (tmp_path / "work" / "published").exists()  # nothing generated, nothing cached


def test_a_study_cannot_exceed_the_policy_by_asking_again(tmp_path: Path) -> None:
    """max_images holds per study across requests (new nonces), not per request."""
    toml = _site_toml(tmp_path, audit=False)
    toml.write_text(toml.read_text() + "[privacy]\nmax_images = 10\n")
    app = build_client_app(audit=False)
    ctx = _context({"site-config": str(toml)})

    def ask(nonce: str, study: str = "s1") -> Message:
        content = RecordDict({P.CONFIG_KEY: ConfigRecord({"gate": json.dumps({}), "quota": 6, "max-attempts": 9,
                                                          "study-id": study, "nonce": nonce})})
        return app(Message(content, dst_node_id=3, message_type=P.MSG_PUBLISH), ctx)

    first = ask("a" * 32)  # within the limit: fails later only because this site has no generator yet
    assert first.has_error() and not first.error.reason.startswith("PolicyRefusal")
    assert not ask("a" * 32).error.reason.startswith("PolicyRefusal")  # the same request again: counted once
    second = ask("b" * 32)
    assert second.error.reason.startswith("PolicyRefusal") and "12 images (at most 10)" in second.error.reason
    assert not ask("c" * 32, study="s2").error.reason.startswith("PolicyRefusal")  # another study starts afresh
