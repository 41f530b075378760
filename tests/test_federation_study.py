"""The coordinator's study logic against an in-process fake grid: failures, timeouts, tampering."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from fixtures.federation import gate_run
from flwr.app import ArrayRecord, Error, Message
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

from fedsynth.federation import protocol as P
from fedsynth.federation.config import ScenarioConfig
from fedsynth.federation.phases.generators import train_generators
from fedsynth.federation.study import Study, StudyError, StudySpec

pytestmark = pytest.mark.usefixtures("flower_message_context")


class FakeGrid(Grid):
    """Answers each message with ``behaviour[node](msg)``: a RecordDict, an exception, or None (timeout)."""

    def __init__(self, behaviour, enrolled=None):
        self.behaviour = behaviour
        self.enrolled = dict(enrolled or {})
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

    def get_nodes(self):  # the enrolment registry: the name each node was registered under
        from flwr.proto.node_pb2 import NodeInfo

        return [NodeInfo(node_id=n, name=self.enrolled.get(n, getattr(f, "site_id", ""))) for n, f in self.behaviour.items()]

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


def _site(site_id, bundle=None, fail=(), silent=(), n_val=2):
    def answer(msg):
        kind = msg.metadata.message_type
        if kind in fail:
            raise RuntimeError("/secret/path of patient p001")
        if kind in silent:
            return None
        if kind == P.MSG_PING:
            return P.SiteInfo(site_id=site_id, modality="ct", n_train=4, n_val=n_val, n_test=2, image_size=32,
                              generator_ready=False).to_content()
        if kind == P.MSG_TRAIN_GENERATOR:
            return P.GeneratorReply(site_id=site_id, checkpoint_hash="test", skipped=False, seconds=1.0).to_content()
        if kind == P.MSG_PUBLISH:
            images, sign = bundle
            req = P.PublishRequest.from_content(msg.content)
            signed = sign(site_id, req)
            off, n = req.offset, req.chunk_images
            return P.PublishChunk(site_id=site_id, offset=off, n_total=len(images), quota_met=True,
                                  n_accepted=len(images), n_rejected=0, acceptance_rate=1.0,
                                  images=images[off : off + n], signed=signed if off == 0 else None).to_content()
        raise AssertionError(kind)

    answer.site_id = site_id  # enrolled under the id it claims (unless a test says otherwise)
    return answer


def _study(tmp_path, behaviour, keys, min_sites=2):
    sc = ScenarioConfig(name="t", min_sites=min_sites,
                        task={"task": "ldct", "network": "rednet", "channels": 4, "patch_size": 24},
                        gate={"metrics": ["pixel_rmse"]}, publish={"quota": 6, "chunk_images": 4})
    spec = StudySpec(scenario=sc, out=tmp_path / "study", site_keys=keys, mode="deployment",
                     expected_sites=len(behaviour))
    return Study(FakeGrid(behaviour), spec)


def _signer(cert, priv):
    """Sign like a site: bound to the site id it claims and to the request's study and nonce."""
    from fedsynth.privacy import GatePolicy, load_private_key, sign_certificate

    def sign(site_id, req):
        return sign_certificate(cert, load_private_key(priv), site_id=site_id, study_id=req.study_id,
                                nonce=req.nonce, policy_digest=GatePolicy().digest())

    return sign


def _bundles(tmp_path, n_sites):
    keys = tmp_path / "registry"
    keys.mkdir()
    out = {}
    for k in range(1, n_sites + 1):
        images, cert, pub, priv = gate_run(tmp_path / f"k{k}", seed=k, calibrated=True)
        (keys / f"site-{k}.pub").write_bytes(pub.read_bytes())
        out[k] = (images, _signer(cert, priv))
    return keys, out


def test_publish_in_chunks_verifies_and_pools(tmp_path):
    keys, b = _bundles(tmp_path, 2)
    st = _study(tmp_path, {10: _site("site-1", b[1]), 20: _site("site-2", b[2])}, keys)
    st.roster.connect()
    st._publish()
    pool = st.ctx.pool
    assert pool.count() == 12 and pool.sites() == ["site-1", "site-2"]
    np.testing.assert_array_equal(pool.images("site-1"), b[1][0])
    assert st.roster.grid.totals()["synthetic-pool"]["received"] > b[1][0].nbytes + b[2][0].nbytes
    assert st.state.privacy["site-1"]["n_published"] == 6
    # resume: a second publish phase asks nobody again
    before = len(st.roster.grid._inner.sent)
    st._publish()
    assert len(st.roster.grid._inner.sent) == before


def test_chunk_k_of_every_site_is_asked_in_one_round(tmp_path):
    """A deployment round trip costs seconds whatever its size: n sites' chunks share each round."""
    keys, b = _bundles(tmp_path, 2)
    st = _study(tmp_path, {10: _site("site-1", b[1]), 20: _site("site-2", b[2])}, keys)
    st.roster.connect()
    fake = st.roster.grid._inner
    plain, rounds = fake.send_and_receive, []
    fake.send_and_receive = lambda msgs, timeout=None: (rounds.append(len(msgs)), plain(msgs, timeout=timeout))[1]
    st._publish()
    assert rounds == [2, 2]  # 6 images in chunks of 4: two rounds, both sites in each
    assert st.ctx.pool.sites() == ["site-1", "site-2"]


def _lying(site_id, bundle, lie):
    """A site whose publish replies lie about shape or count (``lie`` rewrites the honest chunk)."""
    honest = _site(site_id, bundle)

    def answer(msg):
        out = honest(msg)
        if msg.metadata.message_type == P.MSG_PUBLISH:
            return lie(P.PublishChunk.from_content(out)).to_content()
        return out

    answer.site_id = site_id
    return answer


@pytest.mark.parametrize("lie, reason", [
    (lambda c: c if c.offset == 0 else dataclasses.replace(c, images=np.zeros((2, 16, 16), np.float32)),
     "shape"),
    (lambda c: dataclasses.replace(c, n_total=10**12), "more than the quota"),
    (lambda c: dataclasses.replace(c, n_total=5), "does not fit"),
])
def test_a_site_lying_in_its_chunks_is_rejected_and_the_others_pooled(tmp_path, lie, reason):
    keys, b = _bundles(tmp_path, 2)
    st = _study(tmp_path, {10: _site("site-1", b[1]), 20: _lying("site-2", b[2], lie)}, keys)
    st.roster.connect()
    st._publish()
    assert st.ctx.pool.sites() == ["site-1"]
    assert reason in st.state.rejected_bundles["site-2"]
    assert "site-2" not in st.roster.missing  # a privacy outcome: the site stays in the baselines


def test_failed_and_silent_sites_are_dropped_and_named(tmp_path):
    keys, b = _bundles(tmp_path, 3)
    st = _study(tmp_path, {1: _site("site-1", b[1]), 2: _site("site-2", b[2], fail={P.MSG_TRAIN_GENERATOR}),
                           3: _site("site-3", b[3])}, keys)
    st.roster.connect()
    train_generators(st.ctx)
    missing = st.roster.missing
    assert set(missing) == {"site-2"}
    assert "RuntimeError" in missing["site-2"] and "secret" not in missing["site-2"]
    assert st.report().missing_sites == missing
    st.roster.grid._inner.behaviour[3] = _site("site-3", b[3], silent={P.MSG_PUBLISH})
    with pytest.raises(StudyError, match="min_sites=2.*site-2.*site-3"):
        st._publish()


def test_tampered_bundle_is_rejected_not_pooled(tmp_path):
    keys, b = _bundles(tmp_path, 2)
    images, sign = b[2]
    bad = images.copy()
    bad[-1] += 0.001  # last chunk altered in transit
    st = _study(tmp_path, {1: _site("site-1", b[1]), 2: _site("site-2", (bad, sign))}, keys)
    st.roster.connect()
    st._publish()
    assert st.ctx.pool.sites() == ["site-1"]
    assert "digest" in st.state.rejected_bundles["site-2"]
    assert st.state.privacy["site-2"]["n_published"] == 0
    assert len(st.ctx.pool.bundles(site="site-2", verified=False)) == 1


def test_unregistered_site_key_is_rejected(tmp_path):
    keys, b = _bundles(tmp_path, 2)
    (keys / "site-2.pub").unlink()
    st = _study(tmp_path, {1: _site("site-1", b[1]), 2: _site("site-2", b[2])}, keys)
    st.roster.connect()
    st._publish()
    assert st.ctx.pool.sites() == ["site-1"]
    assert "no registered public key" in st.state.rejected_bundles["site-2"]


def test_replies_come_back_in_site_order_whatever_order_they_arrived(tmp_path):
    """Strategies sum weights in reply order; a fixed order keeps FedAvg independent of who finished first."""
    keys, b = _bundles(tmp_path, 3)
    st = _study(tmp_path, {30: _site("site-1", b[1]), 10: _site("site-3", b[3]), 20: _site("site-2", b[2])}, keys)
    st.roster.connect()
    assert [s.site_id for s in st.roster.alive()] == ["site-1", "site-2", "site-3"]
    fake = st.roster.grid._inner
    plain = fake.send_and_receive  # answers in the order the messages were sent
    fake.send_and_receive = lambda msgs, timeout=None: list(reversed(plain(msgs, timeout=timeout)))
    msgs = [Message(P.PingRequest().to_content(), dst_node_id=n, message_type=P.MSG_PING) for n in (20, 10, 30)]
    replies = st.roster.grid.send_and_receive(msgs, timeout=5)
    assert [P.SiteInfo.from_content(r.content).site_id for r in replies] == ["site-1", "site-2", "site-3"]


def _sign_with(cert_priv, **binding):
    """A signer that ignores the request and binds to the given fields (a replay or a forgery)."""
    from fedsynth.privacy import GatePolicy, load_private_key, sign_certificate

    cert, priv = cert_priv

    def sign(site_id, req):
        fields = {"site_id": site_id, "study_id": req.study_id, "nonce": req.nonce,
                  "policy_digest": GatePolicy().digest(), **binding}
        return sign_certificate(cert, load_private_key(priv), **fields)

    return sign


@pytest.mark.parametrize("forged, reason", [
    ({"nonce": "0" * 32}, "request nonce"),
    ({"study_id": "another-study"}, "study id"),
    ({"site_id": "site-1"}, "site id"),  # site-2 passes off a certificate bound to site-1
])
def test_replayed_or_rebound_certificates_are_rejected(tmp_path, forged, reason):
    keys, b = _bundles(tmp_path, 2)
    images, cert, pub, priv = gate_run(tmp_path / "k2b", seed=2, calibrated=True)
    (keys / "site-2.pub").write_bytes(pub.read_bytes())
    st = _study(tmp_path, {1: _site("site-1", b[1]), 2: _site("site-2", (images, _sign_with((cert, priv), **forged)))},
                keys)
    st.roster.connect()
    st._publish()
    assert st.ctx.pool.sites() == ["site-1"]
    assert reason in st.state.rejected_bundles["site-2"]


def test_a_certificate_weaker_than_the_request_is_rejected(tmp_path):
    """A site that ran a weaker gate than asked (absolute 1e-3 for a calibrated request) is not pooled."""
    keys, b = _bundles(tmp_path, 2)
    images, cert, pub, priv = gate_run(tmp_path / "weak", seed=2, calibrated=False)
    (keys / "site-2.pub").write_bytes(pub.read_bytes())
    st = _study(tmp_path, {1: _site("site-1", b[1]), 2: _site("site-2", (images, _sign_with((cert, priv))))}, keys)
    st.roster.connect()
    st._publish()
    assert st.ctx.pool.sites() == ["site-1"]
    assert "does not answer the request" in st.state.rejected_bundles["site-2"]
    assert "calibrated gate was requested" in st.state.rejected_bundles["site-2"]


def test_a_policy_digest_other_than_the_registered_one_is_rejected(tmp_path):
    keys, b = _bundles(tmp_path, 2)
    (keys / "site-2.policy").write_text("sha256:" + "ab" * 32)  # what the site's officer registered
    st = _study(tmp_path, {1: _site("site-1", b[1]), 2: _site("site-2", b[2])}, keys)
    st.roster.connect()
    st._publish()
    assert st.ctx.pool.sites() == ["site-1"]
    assert "policy digest" in st.state.rejected_bundles["site-2"]
    from fedsynth.privacy import GatePolicy

    assert st.state.privacy["site-1"]["policy_digest"] == GatePolicy().digest()


def test_a_site_id_claimed_twice_or_shaped_like_a_path_takes_no_part(tmp_path):
    keys, b = _bundles(tmp_path, 3)
    from flwr.app import ConfigRecord, RecordDict

    def path_shaped(msg):  # a raw reply: the coordinator must refuse it while decoding
        return RecordDict({P.SITE_KEY: ConfigRecord({"site-id": "../../etc/passwd", "modality": "ct", "n-train": 4,
                                                     "n-test": 2, "image-size": 32, "generator-ready": False})})

    st = _study(tmp_path, {1: _site("site-1", b[1]), 2: _site("site-2", b[2]), 3: _site("site-2", b[3]),
                           4: path_shaped}, keys, min_sites=1)
    st.roster.connect()
    assert [s.site_id for s in st.roster.alive()] == ["site-1"]
    assert st.roster.missing == {"site-2": "claimed by 2 nodes"}
    assert 4 not in st.roster.sites  # malformed site info: the id names registry files, never a path


def test_a_site_failing_a_fedavg_round_is_named_and_the_fairness_note_says_so(tmp_path):
    """Flower's FedAvg drops a failed reply silently; the report must not claim equal epochs."""
    from fedsynth.federation.phases.weight_averaging import weight_averaging
    from fedsynth.federation.study_report import build_report

    keys, b = _bundles(tmp_path, 2)
    rounds = {"site-2": 0}

    def train_or_fail(site_id, inner):
        def answer(msg):
            if msg.metadata.message_type == P.MSG_TRAIN:
                if site_id == "site-2":
                    rounds["site-2"] += 1
                    if rounds["site-2"] == 2:
                        raise RuntimeError("site-2 crashed in round 2")
                return P.TrainReply(P.weights_of(msg.content), 0.1, 4).to_content()
            if msg.metadata.message_type == P.MSG_EVALUATE:  # validation after every round
                assert P.EvaluateRequest.from_content(msg.content).split == "val"
                return P.EvaluateReply({"psnr": [20.0, 21.0], "ssim": [0.5, 0.5], "rmse": [0.1, 0.09]},
                                       [0, 1]).to_content()
            return inner(msg)
        answer.site_id = site_id
        return answer

    st = _study(tmp_path, {1: train_or_fail("site-1", _site("site-1", b[1])),
                           2: train_or_fail("site-2", _site("site-2", b[2]))}, keys)
    from fedsynth.federation.config import TrainingSettings

    st.spec.scenario.training = TrainingSettings(max_epochs=3, check_every=1, patience=5)
    st.roster.connect()
    weight_averaging(st.ctx, "fedavg")
    st._save()
    assert st.state.participants["fedavg"] == [["site-1", "site-2"], ["site-1"], ["site-1", "site-2"]]
    rep = build_report(st.spec, st.state, ["site-1", "site-2"], {})
    assert rep.participants["fedavg"][1] == ["site-1"]
    assert "site-2 trained in 2 of 3 fedavg rounds (2 local epochs)" in rep.notes[0]
    assert "Every live site trained" not in rep.notes[0]
    assert [p["round"] for p in rep.training["fedavg"].curve] == [1, 2, 3]


def test_a_node_is_the_site_it_was_enrolled_as_not_what_it_claims(tmp_path):
    """Deployment: a node registered as site-1 that says it is site-2 takes no part, and cannot shadow site-2."""
    keys, b = _bundles(tmp_path, 3)
    st = _study(tmp_path, {1: _site("site-1", b[1]), 2: _site("site-3", b[3]), 3: _site("site-2", b[2])},
                keys, min_sites=1)
    st.roster.grid._inner.enrolled = {3: "site-1"}  # node 3 was enrolled as site-1 but claims site-2
    st.roster.connect()
    assert [s.site_id for s in st.roster.alive()] == ["site-1", "site-3"]
    assert "enrolled as site-1" in st.roster.missing["site-2"]


def test_a_site_without_validation_patients_is_named_and_takes_no_part(tmp_path):
    keys, b = _bundles(tmp_path, 3)
    st = _study(tmp_path, {1: _site("site-1", b[1]), 2: _site("site-2", b[2]), 3: _site("site-3", b[3], n_val=0)},
                keys)
    st.roster.connect()
    assert st.roster.alive_ids() == ["site-1", "site-2"]
    assert "no validation patients" in st.roster.missing["site-3"]


def test_a_tuning_grid_is_chosen_on_validation_and_used_for_every_repeat(tmp_path):
    """FedProx's mu from a grid: the candidate with the lowest validation MSE wins; test patients play no part."""
    from fedsynth.federation.config import TrainingSettings
    from fedsynth.federation.phases.weight_averaging import weight_averaging
    from fedsynth.federation.study_report import build_report

    keys, b = _bundles(tmp_path, 2)
    mus: list[float] = []

    def site(site_id, inner):
        def answer(msg):
            kind = msg.metadata.message_type
            if kind == P.MSG_TRAIN:
                req = P.TrainRequest.from_content(msg.content)
                mus.append(req.proximal_mu)
                w = P.weights_of(msg.content).to_torch_state_dict()
                return P.TrainReply(ArrayRecord({k: v * 0 + req.proximal_mu for k, v in w.items()}), 0.1,
                                    4).to_content()
            if kind == P.MSG_EVALUATE:
                req = P.EvaluateRequest.from_content(msg.content)
                assert req.split == "val"  # no test patient is read while tuning
                mu = float(next(iter(P.weights_of(msg.content).to_torch_state_dict().values())).flatten()[0])
                err = abs(mu - 0.001) + 0.01  # the site's validation patients prefer mu = 0.001
                return P.EvaluateReply({"psnr": [20.0], "ssim": [0.5], "rmse": [err]}, [0]).to_content()
            return inner(msg)
        answer.site_id = site_id
        return answer

    st = _study(tmp_path, {1: site("site-1", _site("site-1", b[1])), 2: site("site-2", _site("site-2", b[2]))}, keys)
    st.spec.scenario.training = TrainingSettings(max_epochs=2, check_every=1, patience=2, seeds=2,
                                                 tuning={"fedprox": {"proximal_mu": [0.1, 0.001]}})
    st.roster.connect()
    st.ctx = st.ctx.__class__(st.spec, st.roster, st.ctx.pool, st.ctx.models, st.state.training, st.state.tuning)
    weight_averaging(st.ctx, "fedprox")
    assert st.state.tuning["fedprox"]["chosen"] == {"proximal_mu": 0.001}
    assert [t["params"]["proximal_mu"] for t in st.state.tuning["fedprox"]["tried"]] == [0.1, 0.001]
    # 2 rounds x 2 sites per training: the grid (0.1, 0.001), then repeat 1 with the choice; repeat 0 is reused
    assert mus == [0.1] * 4 + [0.001] * 4 + [0.001] * 4
    assert st.ctx.models.has("fedprox") and st.ctx.models.has("fedprox@seed1")
    rep = build_report(st.spec, st.state, ["site-1", "site-2"], {})
    assert rep.tuning["fedprox"]["chosen"] == {"proximal_mu": 0.001}


@pytest.mark.parametrize(("tuning", "msg"), [
    ({"fedavg": {"proximal_mu": [0.1]}}, "not tunable"),
    ({"scaffold": {"eta": [0.1]}}, "not a weight-averaging method"),
    ({"fedavg": {"local_epochs": [3]}}, "whole divisors of max_epochs"),
])
def test_a_bad_tuning_grid_fails_when_the_scenario_loads(tuning, msg):
    from fedsynth.federation.config import TrainingSettings

    with pytest.raises(ValueError, match=msg):
        TrainingSettings(max_epochs=4, check_every=2, tuning=tuning)


def test_the_report_averages_seeds_per_patient_and_shows_every_seed(tmp_path):
    from fedsynth.federation.study_report import build_report
    from fedsynth.federation.study_state import StudyState

    rng = np.random.default_rng(0)
    sc = ScenarioConfig(name="t", training={"seeds": 2})
    spec = StudySpec(scenario=sc, out=tmp_path / "s", site_keys=tmp_path / "k", mode="simulation", expected_sites=2)
    patients = {"site-1": [0, 0, 1, 1, 2, 2], "site-2": [0, 0, 1, 1, 2, 2]}

    def scores(base):
        return {sid: {"psnr": (base + rng.normal(0, 0.1, 6)).tolist(), "ssim": (0.9 + rng.normal(0, 0.001, 6)).tolist(),
                      "rmse": (0.01 + rng.normal(0, 1e-4, 6)).tolist()} for sid in patients}

    evals = {"synthetic-pool": scores(40.0), "synthetic-pool@seed1": scores(40.2), "fedavg": scores(39.0),
             "fedavg@seed1": scores(39.4), "degraded-input": scores(37.0)}
    state = StudyState(evaluations=evals, test_patients=patients)
    rep = build_report(spec, state, ["site-1", "site-2"], {})
    pool = rep.methods["synthetic-pool"]
    assert len(pool.per_seed["psnr"]) == 2 and pool.per_seed["psnr"][1] > pool.per_seed["psnr"][0]
    expected = np.mean([np.mean(evals[n][s]["psnr"]) for n in ("synthetic-pool", "synthetic-pool@seed1")
                        for s in patients])
    assert abs(pool.pooled.psnr.mean - expected) < 1e-9  # the seed mean of every slice
    row = next(c for c in rep.patient_comparisons if c.b == "fedavg" and c.metric == "psnr")
    assert row.n_patients == 6 and row.verdict == "superior"
    assert [round(e["mean_diff"], 1) for e in row.per_seed] == [1.0, 0.8]  # each seed against the same seed
    assert rep.per_patient["fedavg"]["patients"] == [f"site-{k}#{p}" for k in (1, 2) for p in range(3)]
    assert "degraded-input" in rep.methods and rep.repeats == 2


def test_a_site_crashing_in_local_only_or_in_evaluation_is_dropped_named_and_the_rest_go_on(tmp_path):
    """The later phases too: a crash is the site's, not the study's; the report names it."""
    from fedsynth.federation.config import TrainingSettings
    from fedsynth.federation.phases.evaluation import evaluate
    from fedsynth.federation.phases.local_only import local_only

    keys, b = _bundles(tmp_path, 3)
    crash = {"site-2": P.MSG_TRAIN, "site-3": P.MSG_EVALUATE}

    def behave(site_id, inner):
        def answer(msg):
            kind = msg.metadata.message_type
            if crash.get(site_id) == kind:
                raise RuntimeError(f"{site_id} crashed in {kind} at /secret/path")
            if kind == P.MSG_TRAIN:
                return P.TrainReply(P.weights_of(msg.content), 0.1, 4).to_content()
            if kind == P.MSG_EVALUATE:
                return P.EvaluateReply({"psnr": [20.0, 21.0], "ssim": [0.5, 0.5], "rmse": [0.1, 0.09]},
                                       [0, 1]).to_content()
            return inner(msg)
        answer.site_id = site_id
        return answer

    st = _study(tmp_path, {k: behave(f"site-{k}", _site(f"site-{k}", b[k])) for k in (1, 2, 3)}, keys, min_sites=1)
    st.spec.scenario.training = TrainingSettings(max_epochs=2, check_every=1, patience=5)
    st.roster.connect()
    local_only(st.ctx)  # site-2 crashes training alone
    assert set(st.roster.missing) == {"site-2"} and "RuntimeError" in st.roster.missing["site-2"]
    assert "secret" not in st.roster.missing["site-2"]
    assert st.ctx.models.has("local-site-1") and st.ctx.models.has("local-site-3")
    assert not st.ctx.models.has("local-site-2")
    evaluate(st.ctx, st.state.evaluations, st.state.test_patients, st._save)  # site-3 crashes being scored
    assert set(st.roster.missing) == {"site-2", "site-3"}
    assert set(st.state.evaluations["local-site-1"]) == {"site-1"}
    assert st.report().missing_sites == st.roster.missing


def _reviewing(site_id, bundle, undecided: int):
    """A site whose reviewer decides after ``undecided`` publish requests (it answers "pending" until then)."""
    honest, asked = _site(site_id, bundle), {"n": 0}

    def answer(msg):
        if msg.metadata.message_type == P.MSG_PUBLISH and asked["n"] < undecided:
            asked["n"] += 1
            return P.PublishChunk(site_id=site_id, offset=0, n_total=0, quota_met=False, n_accepted=0,
                                  n_rejected=0, acceptance_rate=0.0, images=np.zeros((0, 32, 32), np.float32),
                                  pending=True).to_content()
        return honest(msg)

    answer.site_id = site_id
    return answer


def test_the_coordinator_waits_for_a_sites_release_review_then_pools_it(tmp_path, monkeypatch):
    import fedsynth.federation.phases.publish as publish_phase

    keys, b = _bundles(tmp_path, 2)
    st = _study(tmp_path, {10: _site("site-1", b[1]), 20: _reviewing("site-2", b[2], undecided=3)}, keys)
    slept = []
    monkeypatch.setattr(publish_phase.time, "sleep", slept.append)
    st.roster.connect()
    st._publish()
    assert st.ctx.pool.sites() == ["site-1", "site-2"] and not st.state.rejected_bundles
    assert slept == [st.spec.scenario.publish.review_poll_s] * 3  # asked again every poll until decided


def test_an_undecided_review_becomes_a_rejected_bundle_at_the_timeout_not_a_dropped_site(tmp_path, monkeypatch):
    import fedsynth.federation.phases.publish as publish_phase

    keys, b = _bundles(tmp_path, 2)
    st = _study(tmp_path, {10: _site("site-1", b[1]), 20: _reviewing("site-2", b[2], undecided=10**6)}, keys)
    clock = {"t": 0.0}
    monkeypatch.setattr(publish_phase.time, "monotonic", lambda: clock["t"])
    monkeypatch.setattr(publish_phase.time, "sleep", lambda s: clock.__setitem__("t", clock["t"] + s))
    st.roster.connect()
    st._publish()
    assert st.ctx.pool.sites() == ["site-1"]
    assert "release review not decided within" in st.state.rejected_bundles["site-2"]
    assert "site-2" not in st.roster.missing
