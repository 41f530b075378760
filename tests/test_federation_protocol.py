"""Protocol records, chunked publish (2,000 x 128x128 float32), byte metering, scenario errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fedsynth.cli import main
from fedsynth.federation import protocol as P
from fedsynth.federation.config import PublishSettings


def test_images_and_blobs_round_trip_the_wire():
    imgs = np.random.default_rng(0).random((5, 16, 16), dtype=np.float32)
    blob = json.dumps({"certificate": {"a": 1}, "signature": "xyz"}).encode()
    content = RecordDict({P.IMAGES_KEY: P.images_to_record(imgs), P.CERT_KEY: P.blob_to_record(blob)})
    back = P.wire_roundtrip(content)
    np.testing.assert_array_equal(P.record_to_images(back[P.IMAGES_KEY]), imgs)
    assert P.record_to_blob(back[P.CERT_KEY]) == blob


def test_record_validation():
    with pytest.raises(P.ProtocolError):
        P.images_to_record(np.zeros((4, 4), np.float32))
    with pytest.raises(P.ProtocolError):
        P.record_to_images(ArrayRecord())
    with pytest.raises(P.ProtocolError):
        P.record_to_blob(P.images_to_record(np.zeros((1, 2, 2), np.float32)))


def test_chunk_ranges_cover_everything_once():
    assert P.chunk_ranges(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert P.chunk_ranges(0, 4) == []
    with pytest.raises(P.ProtocolError):
        P.chunk_ranges(3, 0)


def test_assembler_detects_missing_overlapping_and_misfit_chunks():
    a = P.BundleAssembler(6)
    a.add(3, np.ones((3, 2, 2), np.float32))
    assert a.missing() == [0, 1, 2] and not a.complete()
    with pytest.raises(P.ProtocolError, match="incomplete"):
        a.images()
    with pytest.raises(P.ProtocolError, match="does not fit"):
        a.add(5, np.ones((3, 2, 2), np.float32))
    with pytest.raises(P.ProtocolError, match="shape"):
        a.add(0, np.ones((3, 4, 4), np.float32))
    a.add(0, np.zeros((3, 2, 2), np.float32))
    assert a.images().shape == (6, 2, 2) and a.images()[:3].sum() == 0
    a.add(1, np.zeros((2, 2, 2), np.float32))  # overlaps
    with pytest.raises(P.ProtocolError, match="overlap"):
        a.images()


def test_publish_of_2000_images_128px_in_chunks_survives_the_wire():
    """2,000 x 128x128 float32 (125 MiB): chunked replies, each through Flower's wire format."""
    rng = np.random.default_rng(0)
    bundle = rng.random((2000, 128, 128), dtype=np.float32)
    chunk = PublishSettings().chunk_images
    asm = P.BundleAssembler(len(bundle))
    total_bytes = 0
    # out of order on purpose: the coordinator may get chunks back in any order
    for start, stop in reversed(P.chunk_ranges(len(bundle), chunk)):
        content = RecordDict({
            P.IMAGES_KEY: P.images_to_record(bundle[start:stop]),
            P.SITE_KEY: ConfigRecord({"offset": start, "n-total": len(bundle)}),
        })
        total_bytes += P.recorddict_nbytes(content)
        back = P.wire_roundtrip(content)
        asm.add(int(back[P.SITE_KEY]["offset"]), P.record_to_images(back[P.IMAGES_KEY]))
    np.testing.assert_array_equal(asm.images(), bundle)
    assert total_bytes >= bundle.nbytes  # metering counts the real payload


def test_recorddict_nbytes_counts_the_payload():
    small = RecordDict({P.IMAGES_KEY: P.images_to_record(np.zeros((1, 8, 8), np.float32))})
    big = RecordDict({P.IMAGES_KEY: P.images_to_record(np.random.rand(100, 64, 64).astype(np.float32))})
    assert P.recorddict_nbytes(big) - P.recorddict_nbytes(small) >= 99 * 64 * 64 * 4


@pytest.mark.parametrize(
    "body, expect",
    [
        ('name = "x"\n[training]\nmax_epochs = 5\ncheck_every = 2\n', "multiple of check_every"),
        ('name = "x"\nbogus = 1\n', "bogus"),
        ('name = "x"\nmin_sites = 9\n', "min_sites"),
        ('name = "x"\n[task]\ntask = "nope"\n', "task"),
        ("name = = 1\n", "not valid TOML"),
    ],
)
def test_scenario_errors_are_one_line_exit_2(tmp_path, capsys, body, expect):
    p = tmp_path / "bad.toml"
    p.write_text(body)
    assert main(["simulate", str(p), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fedsynth: error:") and "\n" not in err and expect in err


def test_unknown_scenario_names_the_known_ones(tmp_path, capsys):
    assert main(["simulate", "no-such-scenario", "--out", str(tmp_path)]) == 2
    assert "default" in capsys.readouterr().err


def _roundtrip(content: RecordDict) -> RecordDict:
    return P.wire_roundtrip(content)


def test_typed_requests_and_replies_survive_the_wire():
    from fedsynth.privacy import GateConfig
    from fedsynth.tasks import TaskConfig

    gate = GateConfig(metrics=["pixel_rmse"], percentile=2.5)
    task = TaskConfig(task="ldct", channels=8)
    pub = P.PublishRequest(gate=gate, quota=5, max_attempts=20, study_id="s1", nonce="ab" * 16, seed=3,
                           sample_steps=10, chunk_images=2, offset=4, two_sample=True)
    assert P.PublishRequest.from_content(_roundtrip(pub.to_content())) == pub
    info = P.SiteInfo(site_id="s", modality="ct", n_train=3, n_test=2, image_size=32, generator_ready=True)
    assert P.SiteInfo.from_content(_roundtrip(info.to_content())) == info
    gen = P.GeneratorRequest(profile="tiny", overrides={"ae_epochs": 2})
    assert P.GeneratorRequest.from_content(_roundtrip(gen.to_content())) == gen
    rep = P.GeneratorReply(site_id="s", checkpoint_hash="sha256:ab", skipped=True, seconds=1.5)
    assert P.GeneratorReply.from_content(_roundtrip(rep.to_content())) == rep
    ev = P.EvaluateRequest(task=task, seed=9)
    assert P.EvaluateRequest.from_content(_roundtrip(ev.to_content(ArrayRecord()))) == ev
    tr = P.TrainRequest(task=task, local_epochs=2, seed=1)
    content = tr.to_content(ArrayRecord())
    content[P.CONFIG_KEY]["server-round"] = 3  # what Flower's strategies add
    content[P.CONFIG_KEY]["proximal-mu"] = 0.01
    back = P.TrainRequest.from_content(_roundtrip(content))
    assert back.server_round == 3 and back.proximal_mu == 0.01 and back.task == task
    metrics = P.EvaluateReply({"psnr": [30.0, 31.0], "ssim": [0.9, 0.8], "rmse": [0.1, 0.2]})
    assert P.EvaluateReply.from_content(_roundtrip(metrics.to_content())) == metrics


def test_malformed_records_are_protocol_errors():
    with pytest.raises(P.ProtocolError, match="lacks"):
        P.SiteInfo.from_content(RecordDict())
    with pytest.raises(P.ProtocolError, match="record .site.: key .modality.: required"):
        P.SiteInfo.from_content(RecordDict({P.SITE_KEY: ConfigRecord({"site-id": "s"})}))
    with pytest.raises(P.ProtocolError, match="quota"):
        P.PublishRequest.from_content(RecordDict({P.CONFIG_KEY: ConfigRecord(
            {"gate": "{}", "quota": "many", "max-attempts": 3})}))
    with pytest.raises(P.ProtocolError, match="JSON"):
        P.TrainRequest.from_content(RecordDict({P.CONFIG_KEY: ConfigRecord({"task": "{", "local-epochs": 1})}))
