"""The coordinator's study logic against an in-process fake grid: failures, timeouts, tampering."""

from __future__ import annotations

import json

import numpy as np
import pytest
from federation_fixtures import signed_bundle
from flwr.app import ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

from fedsynth.federation import protocol as P
from fedsynth.federation.config import ScenarioConfig
from fedsynth.federation.study import Study, StudyError, StudySpec


@pytest.fixture(autouse=True)
def _run_identity():
    from flwr.supercore.task_identity import TaskIdentity

    names = ("_run_id", "_node_id", "_task_id")
    old = {n: getattr(TaskIdentity, n) for n in names}
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    for n, v in old.items():
        setattr(TaskIdentity, n, v)


class FakeGrid(Grid):
    """Answers each message with ``behaviour[node](msg)``: a RecordDict, an exception, or None (timeout)."""

    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.sent: list[str] = []

    def send_and_receive(self, messages, *, timeout=None):
        out = []
        for m in messages:
            self.sent.append(m.metadata.message_type)
            try:
                content = self.behaviour[m.metadata.dst_node_id](m)
            except Exception as err:  # noqa: BLE001 - becomes an error reply, like a ClientApp
                out.append(Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, type(err).__name__),
                                   reply_to=m))
                continue
            if content is not None:
                out.append(Message(content, reply_to=m))
        return out

    def get_node_ids(self):
        return list(self.behaviour)

    def set_run(self, run):
        pass

    @property
    def run(self):
        return None

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        raise NotImplementedError

    def push_messages(self, messages):
        raise NotImplementedError

    def pull_messages(self, message_ids):
        raise NotImplementedError


def _site(site_id, bundle=None, fail=(), silent=()):
    def answer(msg):
        kind = msg.metadata.message_type
        if kind in fail:
            raise RuntimeError("/secret/path of patient p001")
        if kind in silent:
            return None
        if kind == P.MSG_PING:
            return RecordDict({P.SITE_KEY: ConfigRecord({"site-id": site_id, "n-train": 4, "n-test": 2})})
        if kind == P.MSG_TRAIN_GENERATOR:
            return RecordDict({P.SITE_KEY: ConfigRecord({"site-id": site_id, "checkpoint-hash": "ab",
                                                         "skipped": False}),
                               P.METRICS_KEY: MetricRecord({"seconds": 1.0})})
        if kind == P.MSG_PUBLISH:
            images, signed = bundle
            cfg = msg.content[P.CONFIG_KEY]
            off, n = int(cfg["offset"]), int(cfg["chunk-images"])
            rd = RecordDict({P.IMAGES_KEY: P.images_to_record(images[off : off + n]),
                             P.SITE_KEY: ConfigRecord({"site-id": site_id, "offset": off,
                                                       "n-total": len(images), "quota-met": True})})
            if off == 0:
                rd[P.CERT_KEY] = P.blob_to_record(json.dumps(signed).encode())
            return rd
        raise AssertionError(kind)

    return answer


def _study(tmp_path, behaviour, keys, min_sites=2):
    sc = ScenarioConfig(name="t", min_sites=min_sites,
                        task={"task": "ldct", "network": "rednet", "channels": 4, "patch_size": 24},
                        gate={"metrics": ["pixel_rmse"]}, publish={"quota": 6, "chunk_images": 4})
    spec = StudySpec(sc, tmp_path / "study", keys, mode="deployment", expected_sites=len(behaviour))
    return Study(FakeGrid(behaviour), spec)


def _bundles(tmp_path, n_sites):
    keys = tmp_path / "registry"
    keys.mkdir()
    out = {}
    for k in range(1, n_sites + 1):
        images, signed, pub, _ = signed_bundle(tmp_path / f"k{k}", seed=k)
        (keys / f"site-{k}.pub").write_bytes(pub.read_bytes())
        out[k] = (images, signed)
    return keys, out


def test_publish_in_chunks_verifies_and_pools(tmp_path):
    keys, b = _bundles(tmp_path, 2)
    st = _study(tmp_path, {10: _site("site-1", b[1]), 20: _site("site-2", b[2])}, keys)
    st._connect()
    st._publish()
    assert st.pool.count() == 12 and st.pool.sites() == ["site-1", "site-2"]
    np.testing.assert_array_equal(st.pool.images("site-1"), b[1][0])
    assert st.grid.totals()["synthetic-pool"]["received"] > b[1][0].nbytes + b[2][0].nbytes
    assert st.state["privacy"]["site-1"]["n_published"] == 6
    # resume: a second publish phase asks nobody again
    before = len(st.grid._inner.sent)
    st._publish()
    assert len(st.grid._inner.sent) == before


def test_failed_and_silent_sites_are_dropped_and_named(tmp_path):
    keys, b = _bundles(tmp_path, 3)
    st = _study(tmp_path, {1: _site("site-1", b[1]), 2: _site("site-2", b[2], fail={P.MSG_TRAIN_GENERATOR}),
                           3: _site("site-3", b[3])}, keys)
    st._connect()
    st._train_generators()
    assert set(st.missing) == {"site-2"}
    assert "RuntimeError" in st.missing["site-2"] and "secret" not in st.missing["site-2"]
    assert st.report()["missing_sites"] == st.missing
    st.grid._inner.behaviour[3] = _site("site-3", b[3], silent={P.MSG_PUBLISH})
    with pytest.raises(StudyError, match="min_sites=2.*site-2.*site-3"):
        st._publish()


def test_tampered_bundle_is_rejected_not_pooled(tmp_path):
    keys, b = _bundles(tmp_path, 2)
    images, signed = b[2]
    bad = images.copy()
    bad[-1] += 0.001  # last chunk altered in transit
    st = _study(tmp_path, {1: _site("site-1", b[1]), 2: _site("site-2", (bad, signed))}, keys)
    st._connect()
    st._publish()
    assert st.pool.sites() == ["site-1"]
    assert "digest" in st.state["rejected_bundles"]["site-2"]
    assert st.state["privacy"]["site-2"]["n_published"] == 0
    assert len(st.pool.bundles(site="site-2", verified=False)) == 1


def test_unregistered_site_key_is_rejected(tmp_path):
    keys, b = _bundles(tmp_path, 2)
    (keys / "site-2.pub").unlink()
    st = _study(tmp_path, {1: _site("site-1", b[1]), 2: _site("site-2", b[2])}, keys)
    st._connect()
    st._publish()
    assert st.pool.sites() == ["site-1"]
    assert "no registered public key" in st.state["rejected_bundles"]["site-2"]
