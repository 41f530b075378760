"""Signed certificates: any tampering fails verification; the CLI tools; the audit."""

from __future__ import annotations

import copy
import json
import stat
from pathlib import Path

import numpy as np
import pytest
from fixtures.privacy import cohort

from fedsynth.cli import main
from fedsynth.errors import ConfigError, GateError
from fedsynth.privacy import (
    GateConfig,
    PrivacyGate,
    generate_site_key,
    load_private_key,
    load_public_key,
    sign_certificate,
    verify_certificate,
)
from fedsynth.privacy.audit import audit_synthetic


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, np.ndarray, Path]:
    refs, ids = cohort(seed=1)
    others, _ = cohort(seed=2)
    keys = tmp_path_factory.mktemp("keys")
    priv, _ = generate_site_key(keys)
    res = PrivacyGate(refs, GateConfig(), reference_groups=ids).run(lambda n: others[:n], quota=4, max_attempts=12)
    assert len(res.accepted) >= 2
    return sign_certificate(res.certificate, load_private_key(priv)).model_dump(mode="json"), res.accepted, keys


def _tamper(signed: dict, what: str) -> dict:
    s = copy.deepcopy(signed)
    c = s["certificate"]
    if what == "distance":
        c["images"][0]["nn_distance"]["pixel_rmse"] += 0.5
    elif what == "threshold":
        c["metrics"]["ncc_robust"]["threshold"] = 0.0
    elif what == "flag":
        c["images"][-1]["accepted"] = not c["images"][-1]["accepted"]
    elif what == "generator":
        c["generator_hash"] = "other"
    elif what == "signature":
        s["signature"] = s["signature"][:-4] + ("AAAA" if s["signature"][-4:] != "AAAA" else "BBBB")
    elif what == "unsigned":
        s["signature"] = None
    return s


def test_verifies_untouched(published: tuple) -> None:
    signed, images, keys = published
    cert = verify_certificate(signed, load_public_key(keys / "site.pub"), images)
    assert cert.summary.n_published == len(images)
    assert cert.body() == signed["certificate"]  # the typed certificate is exactly the signed body


@pytest.mark.parametrize("what", ["distance", "threshold", "flag", "generator", "signature", "unsigned"])
def test_tampered_certificate_fails(published: tuple, what: str) -> None:
    signed, images, keys = published
    with pytest.raises(GateError):
        verify_certificate(_tamper(signed, what), load_public_key(keys / "site.pub"), images)


@pytest.mark.parametrize("what", ["swap", "drop", "add", "pixel"])
def test_tampered_images_fail(published: tuple, what: str) -> None:
    signed, images, keys = published
    imgs = images.copy()
    if what == "swap":
        imgs = imgs[::-1].copy()
    elif what == "drop":
        imgs = imgs[1:]
    elif what == "add":
        imgs = np.concatenate([imgs, imgs[:1]])
    else:
        imgs[0, 5, 5] += 1e-3
    with pytest.raises(GateError):
        verify_certificate(signed, load_public_key(keys / "site.pub"), imgs)


def test_malformed_body_with_a_valid_signature_is_a_gate_error(published: tuple, tmp_path: Path) -> None:
    """A body the site really signed but that does not fit the certificate model is refused, in one line."""
    signed, images, keys = published
    priv = load_private_key(keys / "site.key")
    for edit in ("drop_summary", "string_distance", "extra_field"):
        body = copy.deepcopy(signed["certificate"])
        if edit == "drop_summary":
            del body["summary"]
        elif edit == "string_distance":
            body["images"][0]["nn_distance"]["pixel_rmse"] = "far"
        else:
            body["note"] = "trust me"
        with pytest.raises(GateError, match="malformed certificate") as err:
            verify_certificate(sign_certificate(body, priv), load_public_key(keys / "site.pub"), images)
        assert "\n" not in str(err.value)


def test_other_key_fails(published: tuple, tmp_path: Path) -> None:
    signed, images, _ = published
    _, other_pub = generate_site_key(tmp_path)
    with pytest.raises(GateError, match="signature"):
        verify_certificate(signed, load_public_key(other_pub), images)


def test_keys(tmp_path: Path) -> None:
    priv, pub = generate_site_key(tmp_path)
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    with pytest.raises(ConfigError):
        generate_site_key(tmp_path)
    with pytest.raises(ConfigError):
        load_private_key(pub)


def _npz(path: Path, images: np.ndarray, groups: np.ndarray) -> Path:
    np.savez(path, images=images, groups=groups)
    return path


def test_cli_gate_verify_and_tamper(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refs, ids = cohort(seed=1)
    others, _ = cohort(seed=2)
    real = _npz(tmp_path / "real.npz", refs, ids)
    cands = np.concatenate([others, refs[:3]])
    np.save(tmp_path / "cands.npy", cands)
    assert main(["keygen", "--out", str(tmp_path / "k")]) == 0
    assert main(["gate", "--real", str(real), "--synthetic", str(tmp_path / "cands.npy"), "--out",
                 str(tmp_path / "pub"), "--key", str(tmp_path / "k" / "site.key")]) == 0
    out = tmp_path / "pub"
    # OUT holds only what may be published; the audit (patient ids) is beside it, never inside.
    assert sorted(p.name for p in out.iterdir()) == ["accepted.npy", "certificate.json", "images.npy"]
    audit = json.loads((tmp_path / "pub.audit.json").read_text())
    assert len(audit["candidates"]) == len(cands)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".pub", "pub"))) == ["pub", "pub.audit.json"]
    signed = json.loads((out / "certificate.json").read_text())
    assert signed["certificate"]["summary"]["n_candidates"] == len(cands)
    assert np.load(out / "images.npy").shape[0] == signed["certificate"]["summary"]["n_published"]
    verify = ["verify", "--certificate", str(out / "certificate.json"), "--images", str(out / "images.npy"),
              "--public-key", str(tmp_path / "k" / "site.pub")]
    assert main(verify) == 0
    signed["certificate"]["images"][0]["nn_distance"]["ncc_robust"] = 9.0
    (out / "certificate.json").write_text(json.dumps(signed))
    capsys.readouterr()
    assert main(verify) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fedsynth: error:") and "\n" not in err


def test_cli_bad_inputs_one_line_nothing_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refs, ids = cohort(seed=1)
    real = _npz(tmp_path / "real.npz", refs, ids)
    bad = refs[:4].copy()
    bad[0, 0, 0] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    np.save(tmp_path / "ok.npy", refs[:4])
    cases = [
        ["gate", "--real", str(real), "--synthetic", str(tmp_path / "bad.npy"), "--out", str(tmp_path / "o1")],
        ["gate", "--real", str(tmp_path / "ok.npy"), "--synthetic", str(tmp_path / "ok.npy"), "--out",
         str(tmp_path / "o2")],  # no patient ids: calibration impossible
        ["gate", "--real", str(real), "--synthetic", str(tmp_path / "ok.npy"), "--out", str(tmp_path / "o3"),
         "--threshold-rmse", "0.1"],  # absolute mode without an ncc threshold
        ["gate", "--real", str(real), "--synthetic", str(tmp_path / "missing.npy"), "--out", str(tmp_path / "o4")],
    ]
    for argv in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("fedsynth: error:") and "\n" not in err, err
        out = Path(argv[argv.index("--out") + 1])
        assert not out.exists() and not out.with_name(out.name + ".audit.json").exists()


def test_cli_gate_audit_path_is_local_and_never_inside_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refs, ids = cohort(seed=1)
    others, _ = cohort(seed=2)
    real = _npz(tmp_path / "real.npz", refs, ids)
    np.save(tmp_path / "cands.npy", others[:6])
    gate = ["gate", "--real", str(real), "--synthetic", str(tmp_path / "cands.npy")]
    local = tmp_path / "local" / "run1-audit.json"
    assert main([*gate, "--out", str(tmp_path / "pub"), "--audit", str(local)]) == 0
    assert "local audit (never publish): " + str(local) in capsys.readouterr().out
    assert json.loads(local.read_text())["candidates"]
    assert "audit" not in " ".join(p.name for p in (tmp_path / "pub").iterdir())
    assert not (tmp_path / "pub.audit.json").exists()
    # Refused before any work, nothing written: an audit inside OUT, or one that would be overwritten.
    for out, audit, what in ((tmp_path / "o1", tmp_path / "o1" / "audit.json", "inside the output directory"),
                             (tmp_path / "o2", tmp_path / "o2", "inside the output directory"),
                             (tmp_path / "o3", local, "audit file exists")):
        capsys.readouterr()
        assert main([*gate, "--out", str(out), "--audit", str(audit)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("fedsynth: error:") and "\n" not in err and what in err, err
        assert not out.exists()


def test_cli_gate_accepting_nothing_exits_3_and_still_certifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedsynth.privacy.commands import EXIT_NOTHING_ACCEPTED

    refs, ids = cohort(seed=1)
    real = _npz(tmp_path / "real.npz", refs, ids)
    np.save(tmp_path / "copies.npy", refs[::5])  # every candidate is a copy of a real image
    n = len(refs[::5])
    argv = ["gate", "--real", str(real), "--synthetic", str(tmp_path / "copies.npy"), "--out", str(tmp_path / "pub")]
    capsys.readouterr()
    assert EXIT_NOTHING_ACCEPTED == 3
    assert main(argv) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"fedsynth: gate accepted no candidate ({n} evaluated); nothing to publish"
    out = tmp_path / "pub"
    assert sorted(p.name for p in out.iterdir()) == ["accepted.npy", "certificate.json", "images.npy"]
    assert np.load(out / "accepted.npy").shape == (0, *refs.shape[1:])
    cert = json.loads((out / "certificate.json").read_text())["certificate"]
    assert cert["summary"]["n_candidates"] == n and cert["summary"]["n_published"] == 0
    assert all(not im["accepted"] and im["nn_distance"]["pixel_rmse"] < 1e-5 for im in cert["images"])
    assert (tmp_path / "pub.audit.json").is_file()


def test_cli_gate_help_documents_the_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["gate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "3 no candidate accepted" in text and "--audit PATH" in text


def test_audit_detects_memorisation() -> None:
    refs, ids = cohort(seed=1, patients=6)
    train, train_ids, test = refs[:24], ids[:24], refs[24:]
    memorised = audit_synthetic(train[::2].copy(), train, train_ids, test)
    fresh, _ = cohort(seed=5, patients=2)
    clean = audit_synthetic(fresh, train, train_ids, test)
    for m in ("pixel_rmse", "ncc_robust"):
        assert memorised["metrics"][m]["flagged_share"] == 1.0
        assert memorised["metrics"][m]["membership_auc"] > 0.7
        assert clean["metrics"][m]["flagged_share"] < 1.0
        assert clean["metrics"][m]["membership_auc"] < memorised["metrics"][m]["membership_auc"]


def test_cli_search_strategies_certify_the_same_distances(tmp_path: Path) -> None:
    refs, ids = cohort(seed=3)
    others, _ = cohort(seed=4)
    real = _npz(tmp_path / "real.npz", refs, ids)
    np.save(tmp_path / "cands.npy", np.concatenate([others, refs[:2]]))
    certs = {}
    for search in ("pruned", "flat"):
        assert main(["gate", "--real", str(real), "--synthetic", str(tmp_path / "cands.npy"), "--out",
                     str(tmp_path / search), "--search", search]) == 0
        certs[search] = json.loads((tmp_path / search / "certificate.json").read_text())["certificate"]
    assert certs["pruned"]["config"]["search"] == "pruned" and certs["flat"]["config"]["search"] == "flat"
    for a, b in zip(certs["pruned"]["images"], certs["flat"]["images"], strict=True):
        assert a["accepted"] == b["accepted"]
        for m in a["nn_distance"]:
            assert a["nn_distance"][m] == pytest.approx(b["nn_distance"][m], rel=1e-4, abs=1e-6)


def test_verify_applies_the_thresholds_to_companions(tmp_path: Path) -> None:
    """A site that publishes a candidate whose companion is too close is caught, even with a valid signature."""
    refs, ids = cohort(seed=1)
    others, _ = cohort(seed=2)
    priv, pub = generate_site_key(tmp_path)
    gate = PrivacyGate(refs, GateConfig(require_companions=True), reference_groups=ids)
    res = gate.run(lambda n: (others[:n], others[:n]), quota=2, max_attempts=12)
    key = load_private_key(priv)
    verify_certificate(sign_certificate(res.certificate, key), load_public_key(pub), res.accepted)
    lying = res.certificate.body()
    lying["images"][0]["nn_distance_companion"]["pixel_rmse"] = 0.0  # companion was a copy, still "accepted"
    with pytest.raises(GateError, match="contradicts"):
        verify_certificate(sign_certificate(lying, key), load_public_key(pub), res.accepted)
    missing = res.certificate.body()
    del missing["images"][0]["nn_distance_companion"]
    with pytest.raises(GateError, match="companion"):
        verify_certificate(sign_certificate(missing, key), load_public_key(pub), res.accepted)


def test_canonical_json_matches_the_documented_rfc8785_vector() -> None:
    """docs/privacy.md's test vector, so another implementation can check its canonical bytes against ours."""
    import hashlib
    import re

    from fedsynth.privacy import canonical_json

    doc = (Path(__file__).resolve().parents[1] / "docs" / "privacy.md").read_text(encoding="utf-8")
    body = {"format": "fedsynth-gate-certificate/1", "summary": {"acceptance_rate": 0.5, "n_published": 1},
            "metrics": {"pixel_rmse": {"threshold": 0.0495, "floor": 1e-06}}, "published": ["ab"],
            "binding": {"site_id": "site-1", "nonce": "00ff", "algorithm": "ed25519"}, "note": "é"}
    got = canonical_json(body)
    assert re.search(r"^bytes +(.+)$", doc, re.M).group(1).encode() == got
    assert re.search(r"^sha256 +([0-9a-f]{64})$", doc, re.M).group(1) == hashlib.sha256(got).hexdigest()


def test_the_binding_is_signed_and_checked(tmp_path: Path) -> None:
    """Site, study, nonce, policy, key id and algorithm are inside the signature; the envelope cannot lie."""
    from fedsynth.privacy import Expected, GatePolicy

    refs, ids = cohort(seed=1)
    others, _ = cohort(seed=2)
    priv, pub = generate_site_key(tmp_path)
    res = PrivacyGate(refs, GateConfig(), reference_groups=ids).run(lambda n: others[:n], quota=2, max_attempts=12)
    policy = GatePolicy().digest()
    signed = sign_certificate(res.certificate, load_private_key(priv), site_id="site-1", study_id="study-a",
                              nonce="n" * 32, policy_digest=policy).model_dump(mode="json")
    key = load_public_key(pub)
    ok = Expected(site_id="site-1", study_id="study-a", nonce="n" * 32, policy_digest=policy)
    cert = verify_certificate(signed, key, res.accepted, expected=ok)
    assert cert.binding.key_id == signed["key_id"] and cert.binding.algorithm == "ed25519"
    for wrong, what in ((Expected("site-2", "study-a", "n" * 32), "site id"),
                        (Expected("site-1", "study-b", "n" * 32), "study id"),
                        (Expected("site-1", "study-a", "m" * 32), "request nonce"),
                        (Expected("site-1", "study-a", "n" * 32, "sha256:" + "0" * 64), "policy digest")):
        with pytest.raises(GateError, match=what):
            verify_certificate(signed, key, res.accepted, expected=wrong)
    edited = copy.deepcopy(signed)
    edited["key_id"] = "0" * 64  # the envelope is not signed, but it must agree with the signed binding
    with pytest.raises(GateError, match="envelope key id"):
        verify_certificate(edited, key, res.accepted, expected=ok)
    edited = copy.deepcopy(signed)
    edited["certificate"]["binding"]["nonce"] = "m" * 32  # inside the body: breaks the signature
    with pytest.raises(GateError, match="signature"):
        verify_certificate(edited, key, res.accepted, expected=Expected("site-1", "study-a", "m" * 32))
    unbound = sign_certificate(res.certificate, load_private_key(priv))
    with pytest.raises(GateError, match="not bound"):
        verify_certificate(unbound, key, res.accepted, expected=ok)


def test_memorisation_audit_in_numbers_only() -> None:
    """Copies of training slices hug the training set; fresh patients do not; CIs resample patients."""
    from fedsynth.privacy.audit import memorisation

    refs, ids = cohort(seed=1, patients=6)
    train, train_ids, test, test_ids = refs[:24], ids[:24], refs[24:], ids[24:]
    gate = PrivacyGate(train, GateConfig(), reference_groups=train_ids)
    copies = memorisation(gate, train[::2].copy(), test, test_ids, n_boot=200)
    fresh, _ = cohort(seed=5, patients=2)
    new = memorisation(gate, fresh, test, test_ids, n_boot=200)
    for m in ("pixel_rmse", "ncc_robust"):
        c, f = copies["metrics"][m], new["metrics"][m]
        assert c["near_copy_share"] == 1.0 and f["near_copy_share"] < 1.0
        assert c["membership_auc"] > 0.7 and c["membership_auc"] > f["membership_auc"]
        lo, hi = c["membership_auc_ci95"]
        assert lo <= c["membership_auc"] <= hi
    text = json.dumps(copies)
    assert not any(str(p) in text for p in set(ids))  # numbers only: no patient id leaves with it


def test_calibrated_thresholds_carry_a_ci_over_patients() -> None:
    refs, ids = cohort(seed=1)
    gate = PrivacyGate(refs, GateConfig(), reference_groups=ids)
    for m, entry in gate.metrics.items():
        lo, hi = entry["calibration"]["ci95_over_patients"]
        assert lo <= entry["calibration"]["value"] <= hi and lo < hi, m
