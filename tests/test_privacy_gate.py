"""The gate's promise, checked by brute force; near-copies; quota; fail-closed behaviour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures.privacy import cohort
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedsynth.errors import GateError
from fedsynth.privacy import GateConfig, PrivacyGate, ncc_robust, pixel_rmse

BRUTE = {"pixel_rmse": pixel_rmse, "ncc_robust": ncc_robust}


@pytest.fixture(scope="module")
def site() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    refs, ids = cohort(seed=1, patients=5, per_patient=6)
    others, _ = cohort(seed=2, patients=2, per_patient=6)
    return refs, ids, others


@pytest.fixture(scope="module")
def gate(site: tuple[np.ndarray, np.ndarray, np.ndarray]) -> PrivacyGate:
    refs, ids, _ = site
    return PrivacyGate(refs, GateConfig(), reference_groups=ids)


def _brute_nearest(metric: str, x: np.ndarray, refs: np.ndarray) -> float:
    return min(BRUTE[metric](x, y) for y in refs)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), n_copies=st.integers(0, 4), noise=st.floats(0.0, 0.2))
def test_promise_holds_by_brute_force(gate: PrivacyGate, site: tuple, seed: int, n_copies: int, noise: float) -> None:
    """Every accepted image is >= threshold from every reference, in every metric; distances are exact."""
    refs, _, others = site
    rng = np.random.default_rng(seed)
    cands = others[rng.integers(0, len(others), 6)] + noise * rng.standard_normal((6, 24, 24)).astype(np.float32)
    cands[:n_copies] = refs[rng.integers(0, len(refs), n_copies)]
    cands = np.clip(cands, 0, 1).astype(np.float32)
    res = gate.check(cands)
    for m, tau in gate.thresholds.items():
        for i, x in enumerate(cands):
            true = _brute_nearest(m, x, refs)
            assert res.distances[m][i] == pytest.approx(true, abs=2e-5)
            if res.accepted[i]:
                assert true >= tau - 2e-5
    assert not res.accepted[:n_copies].any()


def _near_copies(y: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    zero_shift = np.zeros_like(y)
    zero_shift[3:, :-2] = y[:-3, 2:]  # shifted by (3, -2) with zero fill
    a, b = rng.uniform(0.8, 1.25), rng.uniform(0.0, 0.1)
    return [y.copy(), y[:, ::-1].copy(), y[::-1, :].copy(), np.roll(y, (-4, 4), axis=(0, 1)), zero_shift,
            np.clip(a * y + b, 0, 1), np.clip(a * y[:, ::-1] + b, 0, 1)]


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(idx=st.integers(0, 29), seed=st.integers(0, 1000))
def test_near_copies_are_always_rejected(gate: PrivacyGate, site: tuple, idx: int, seed: int) -> None:
    refs, _, _ = site
    copies = np.stack(_near_copies(refs[idx], np.random.default_rng(seed))).astype(np.float32)
    res = gate.check(copies)
    assert not res.accepted.any()
    assert (res.distances["ncc_robust"] < 1e-4).all()


def test_thresholds_are_calibrated_from_other_patients(gate: PrivacyGate, site: tuple) -> None:
    _, _, others = site
    assert gate.check(others).accepted.any()  # unseen patients can pass
    for entry in gate.metrics.values():
        assert entry["calibration"]["n_patients"] == 5 and entry["threshold"] > 0


def test_sharded_and_batched_search_equal_one_flat_search(site: tuple) -> None:
    refs, ids, others = site
    many = np.concatenate([refs] * 3)  # 90 references, searched in shards of 64
    one = PrivacyGate(many, GateConfig(mode="absolute", thresholds={"pixel_rmse": 0.05, "ncc_robust": 0.01}))
    small = PrivacyGate(many, GateConfig(mode="absolute", thresholds={"pixel_rmse": 0.05, "ncc_robust": 0.01},
                                         reference_shard=64, memory_mb=16))
    a, b = one.check(others), small.check(others)
    for m in a.distances:
        np.testing.assert_allclose(a.distances[m], b.distances[m], atol=1e-6)


def test_calibration_excludes_the_same_patient(site: tuple) -> None:
    """Duplicating one patient's slices must not drive the threshold to 0 (same-patient pairs are excluded)."""
    refs, ids, _ = site
    g = PrivacyGate(np.concatenate([refs, refs[:6]]), GateConfig(), reference_groups=np.concatenate([ids, ids[:6]]))
    assert min(g.thresholds.values()) > 1e-3


def test_run_meets_quota_and_reports_rate(gate: PrivacyGate, site: tuple) -> None:
    refs, _, others = site
    rng = np.random.default_rng(0)

    def source(n: int) -> np.ndarray:
        x = others[rng.integers(0, len(others), n)].copy()
        x[::2] = refs[rng.integers(0, len(refs), len(x[::2]))]  # half are copies
        return x

    res = gate.run(source, quota=5, max_attempts=100, generator_hash="abc")
    assert len(res.accepted) == 5 and res.quota_met
    assert 0 < res.acceptance_rate < 1 and res.n_candidates <= 100
    s = res.certificate.summary
    assert s.n_published == 5 and s.n_candidates == res.n_candidates and s.quota_met
    assert res.certificate.generator_hash == "abc"


def test_quota_not_met_is_reported(gate: PrivacyGate, site: tuple) -> None:
    refs, _, _ = site
    drawn = []

    def copies(n: int) -> np.ndarray:
        drawn.append(n)
        return refs[:n]

    res = gate.run(copies, quota=3, max_attempts=20)
    assert not res.quota_met and len(res.accepted) == 0 and sum(drawn) <= 20
    assert res.certificate.summary.quota_met is False and res.certificate.published == []


def test_certificate_holds_no_patient_ids_or_indices(gate: PrivacyGate, site: tuple) -> None:
    import json

    _, ids, others = site
    res = gate.run(lambda n: others[:n], quota=3, max_attempts=12)
    text = json.dumps(res.certificate.body())
    assert not any(pid in text for pid in set(ids))
    assert "reference_index" not in text and "patient_id" not in text
    assert "reference_index" in json.dumps(res.audit)  # the local audit keeps them


@pytest.mark.parametrize("case", ["nan_candidate", "inf_reference", "empty_reference", "bad_shape", "source_raises",
                                  "out_of_range", "one_patient", "no_groups", "wrong_ndim"])
def test_fails_closed(site: tuple, case: str) -> None:
    refs, ids, others = site
    cfg = GateConfig()
    with pytest.raises(GateError) as info:
        if case == "inf_reference":
            bad = refs.copy()
            bad[3, 2, 2] = np.inf
            PrivacyGate(bad, cfg, reference_groups=ids)
        elif case == "empty_reference":
            PrivacyGate(refs[:0], cfg, reference_groups=ids[:0])
        elif case == "one_patient":
            PrivacyGate(refs[:6], cfg, reference_groups=ids[:6])
        elif case == "no_groups":
            PrivacyGate(refs, cfg)
        elif case == "wrong_ndim":
            PrivacyGate(refs[0], cfg, reference_groups=ids[:1])
        else:
            gate = PrivacyGate(refs, cfg, reference_groups=ids)
            if case == "nan_candidate":
                bad = others.copy()
                bad[1, 0, 0] = np.nan
                gate.run(lambda n: bad[:n], quota=2, max_attempts=10)
            elif case == "bad_shape":
                gate.run(lambda n: np.zeros((n, 20, 20), np.float32), quota=2, max_attempts=10)
            elif case == "out_of_range":
                gate.run(lambda n: others[:n] * 300.0, quota=2, max_attempts=10)
            else:
                def boom(n: int) -> np.ndarray:
                    raise RuntimeError("sampler crashed")

                gate.run(boom, quota=2, max_attempts=10)
    assert "\n" not in str(info.value)


def test_resizes_when_configured(site: tuple) -> None:
    refs, ids, others = site
    g = PrivacyGate(refs, GateConfig(image_size=16), reference_groups=ids)
    res = g.check(np.pad(others, ((0, 0), (4, 4), (4, 4))))  # 32x32 candidates compared at 16x16
    assert res.accepted.shape == (len(others),)


def test_index_and_calibration_are_cached(site: tuple, tmp_path: Path) -> None:
    refs, ids, _ = site
    a = PrivacyGate(refs, GateConfig(), reference_groups=ids, cache_dir=tmp_path)
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert any(f.startswith("calibration-") for f in files) and "ncc_robust.npy" in files
    b = PrivacyGate(refs, GateConfig(), reference_groups=ids, cache_dir=tmp_path)
    assert a.thresholds == b.thresholds


def test_paper_parity_metric_is_available_but_weak(site: tuple) -> None:
    """random_vgg_rmse works, and a shifted copy is *not* caught by it alone (why it must not be used alone)."""
    refs, ids, _ = site
    g = PrivacyGate(refs, GateConfig(metrics=["random_vgg_rmse"]), reference_groups=ids)
    exact = g.check(refs[:2])
    assert not exact.accepted.any()
    assert np.isfinite(g.check(np.roll(refs[:4], 4, axis=2)).distances["random_vgg_rmse"]).all()


def test_companions_keep_noised_copies_out(gate: PrivacyGate, site: tuple) -> None:
    """Noise can lift a copy over the thresholds; its untextured companion (the copy itself) cannot."""
    refs, _, others = site
    rng = np.random.default_rng(3)
    noised = np.clip(refs + rng.normal(0, 0.25, refs.shape), 0, 1).astype(np.float32)
    alone = gate.run(lambda n: noised[:n], quota=len(refs), max_attempts=len(refs))
    assert alone.quota_met or len(alone.accepted) > 0  # the noise alone passes the gate ...
    paired = gate.run(lambda n: (noised[:n], refs[:n]), quota=len(refs), max_attempts=len(refs))
    assert len(paired.accepted) == 0  # ... the anatomy does not
    rec = paired.certificate.images[0]
    assert set(rec.nn_distance_companion) == set(rec.nn_distance) and rec.nn_distance_companion["pixel_rmse"] == 0
    assert paired.certificate.body()["companions"] == {"required": False, "checked": True}
    assert "companion" in paired.audit["candidates"][0]
    fine = gate.run(lambda n: (others[:n], others[:n]), quota=2, max_attempts=len(others))
    assert len(fine.accepted) == 2  # far candidates with far companions still pass


def test_required_companions_fail_closed_when_missing_or_mismatched(site: tuple) -> None:
    refs, ids, others = site
    gate = PrivacyGate(refs, GateConfig(require_companions=True), reference_groups=ids)
    with pytest.raises(GateError, match="no companion"):
        gate.run(lambda n: others[:n], quota=2, max_attempts=10)
    with pytest.raises(GateError, match="companions"):
        gate.run(lambda n: (others[:n], others[:1]), quota=2, max_attempts=10)
    res = gate.run(lambda n: (others[:n], others[:n]), quota=2, max_attempts=10)
    assert res.certificate.companions.required is True and len(res.accepted) == 2
