"""Metrics and exact search: faiss / pruned search agree with plain numpy brute force."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures.privacy import brute_ncc, brute_rmse, ct_slices, slices
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedsynth.privacy import GateConfig, ReferenceIndex, ncc_robust, pixel_rmse

FAST = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_ncc_robust_catches_each_transform_exactly() -> None:
    y = slices(1, seed=3)[0]
    assert ncc_robust(y, y) == pytest.approx(0.0, abs=1e-9)
    for x in (y[:, ::-1], y[::-1], y[::-1, ::-1], np.roll(y, (4, -4), (0, 1)), np.roll(y[::-1], 3, 1),
              1.25 * y + 0.05, 0.8 * y):
        assert ncc_robust(x, y) == pytest.approx(0.0, abs=1e-9)
    # Outside the transform set the distance is not zero: a 5-pixel shift with max_shift=4.
    assert ncc_robust(np.roll(y, 5, 0), y) > 1e-3
    # Inverted contrast (a < 0) is not a near-copy under this definition.
    assert ncc_robust(1.0 - y, y) > 0.5


def test_pixel_rmse_definition() -> None:
    x, y = np.zeros((4, 4)), np.full((4, 4), 0.5)
    assert pixel_rmse(x, y) == pytest.approx(0.5)


@FAST
@given(seed=st.integers(0, 10_000), n_ref=st.integers(1, 40), n_q=st.integers(1, 6),
       search=st.sampled_from(["pruned", "flat"]), shard=st.sampled_from([64, 4096]), rough=st.booleans())
def test_search_is_exact(seed: int, n_ref: int, n_q: int, search: str, shard: int, rough: bool) -> None:
    rng = np.random.default_rng(seed)
    # Rough (white-noise) references defeat the low-pass bound and exercise the dense refinement.
    refs = rng.random((n_ref, 16, 16), dtype=np.float32) if rough else slices(n_ref, size=16, seed=seed)
    q = slices(n_q, size=16, seed=seed + 1)
    # Mix in near-copies so the nearest neighbour is sometimes very near.
    q[0] = np.roll(refs[rng.integers(n_ref)], (1, -2), (0, 1))[:, ::-1]
    cfg = GateConfig(mode="absolute", thresholds={"pixel_rmse": 0.1, "ncc_robust": 0.1}, search=search,
                     reference_shard=shard, memory_mb=16)
    index = ReferenceIndex(refs, cfg)
    for metric, brute in (("pixel_rmse", brute_rmse), ("ncc_robust", brute_ncc)):
        want = brute(q, refs)
        dist, idx = index.search(metric, q)
        np.testing.assert_allclose(dist, want.min(axis=1), rtol=1e-4, atol=1e-5)
        # The index found is a true nearest neighbour (ties allowed).
        np.testing.assert_allclose(want[np.arange(n_q), idx], want.min(axis=1), rtol=1e-4, atol=1e-5)


@FAST
@given(seed=st.integers(0, 10_000), search=st.sampled_from(["pruned", "flat"]))
def test_leave_one_patient_out_never_matches_own_patient(seed: int, search: str) -> None:
    rng = np.random.default_rng(seed)
    refs = slices(30, size=16, seed=seed)
    groups = rng.integers(0, 5, size=30).astype(str)
    groups[:2] = ["a", "b"]  # at least two patients
    cfg = GateConfig(mode="absolute", thresholds={"pixel_rmse": 0.1, "ncc_robust": 0.1}, search=search)
    index = ReferenceIndex(refs, cfg)
    for metric, brute in (("pixel_rmse", brute_rmse), ("ncc_robust", brute_ncc)):
        dist, idx = index.search(metric, refs, query_groups=groups, reference_groups=groups)
        assert (groups[idx] != groups).all()
        want = brute(refs, refs)
        want[groups[:, None] == groups[None, :]] = np.inf
        np.testing.assert_allclose(dist, want.min(axis=1), rtol=1e-4, atol=1e-5)


def test_embedding_cache_is_reused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    refs = slices(12, size=16)
    cfg = GateConfig(mode="absolute", thresholds={"pixel_rmse": 0.1, "ncc_robust": 0.1})
    a = ReferenceIndex(refs, cfg, tmp_path)
    d1, _ = a.search("ncc_robust", refs[:3])
    files = sorted(p.name for p in tmp_path.rglob("*.npy"))
    assert files and all(a.fingerprint[:16] in str(p) for p in tmp_path.rglob("*.npy"))
    b = ReferenceIndex(refs, cfg, tmp_path)
    d2, _ = b.search("ncc_robust", refs[:3])
    np.testing.assert_array_equal(d1, d2)
    assert sorted(p.name for p in tmp_path.rglob("*.npy")) == files


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), size=st.sampled_from([28, 32, 33]))
def test_pruned_search_is_exact_and_prunes_on_realistic_slices(seed: int, size: int) -> None:
    """CT slices of the cohort's phantom (adjacent slices are close, as in real scans): the bounds must skip most
    pairs and still return exactly the brute-force nearest distance, including for planted near-copies."""
    rng = np.random.default_rng(seed)
    refs = ct_slices(patients=8, slices=30, size=size, seed=seed)
    q = ct_slices(patients=2, slices=5, size=size, seed=seed + 1)
    j = rng.integers(len(refs), size=3)
    q[0] = np.roll(refs[j[0]], (2, -3), (0, 1))[::-1]
    q[1] = np.clip(1.2 * refs[j[1]] + 0.03, 0, 1)
    q[2] = np.clip(refs[j[2]] + rng.normal(0, 0.01, refs[j[2]].shape), 0, 1).astype(np.float32)
    index = ReferenceIndex(refs, GateConfig(mode="absolute", thresholds={"pixel_rmse": 0.1, "ncc_robust": 0.1}))
    for metric, brute in (("pixel_rmse", brute_rmse), ("ncc_robust", brute_ncc)):
        want = brute(q, refs)
        dist, idx = index.search(metric, q)
        np.testing.assert_allclose(dist, want.min(axis=1), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(want[np.arange(len(q)), idx], want.min(axis=1), rtol=1e-4, atol=1e-5)
        assert index.last_exact_fraction < 0.5, f"{metric}: the bounds pruned almost nothing"
