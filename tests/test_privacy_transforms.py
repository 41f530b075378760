"""The gate's declared transform grid: every metric becomes the minimum over each reference's grid variants."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures.privacy import ct_slices
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedsynth.privacy import GateConfig, PrivacyGate
from fedsynth.privacy.transforms import augment, transform_grid

GRID = {"rotations_deg": [-5.0, -2.5, 2.5, 5.0], "scales": [0.95, 1.05], "subpixel_shifts": True}


def test_grid_variants_are_consecutive_and_start_with_the_reference() -> None:
    refs = ct_slices(2, 3, 32, seed=0)
    grid = transform_grid(GateConfig(**GRID))
    assert len(grid) == 5 * 3 * 4 and grid[0] == (0.0, 1.0, (0.0, 0.0))
    aug = augment(refs, grid)
    assert aug.shape == (len(refs) * len(grid), 32, 32)
    for i, ref in enumerate(refs):
        assert np.array_equal(aug[i * len(grid)], ref)  # index // len(grid) maps a variant to its real slice
    assert augment(refs, transform_grid(GateConfig())).shape == refs.shape  # no grid: nothing added


@pytest.fixture(scope="module")
def gates() -> tuple[PrivacyGate, PrivacyGate, np.ndarray]:
    refs = ct_slices(4, 5, 32, seed=0)
    groups = np.repeat([f"p{k}" for k in range(4)], 5)
    base = {"metrics": ["pixel_rmse", "ncc_robust"], "mode": "absolute",
            "thresholds": {"pixel_rmse": 0.03, "ncc_robust": 0.01}}
    return (PrivacyGate(refs, GateConfig(**base), reference_groups=groups),
            PrivacyGate(refs, GateConfig(**base, **GRID), reference_groups=groups), refs)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(idx=st.integers(0, 19), angle=st.sampled_from([-5.0, -2.5, 2.5, 5.0]), scale=st.sampled_from([0.95, 1.0, 1.05]),
       half=st.sampled_from([(0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.5, 0.5)]))
def test_every_copy_on_the_grid_is_rejected(gates: tuple, idx: int, angle: float, scale: float,
                                            half: tuple[float, float]) -> None:
    _, gridded, refs = gates
    copy = augment(refs[idx : idx + 1], [(angle, scale, half)])
    res = gridded.check(copy)
    assert not res.accepted[0]
    assert res.distances["pixel_rmse"][0] < 1e-5  # exact: the copy is one of the searched variants
    assert res.nearest["pixel_rmse"][0] // len(gridded.grid) == idx  # and it maps back to its real slice


def test_the_grid_only_lowers_distances_and_catches_what_the_plain_gate_misses(gates: tuple) -> None:
    plain, gridded, refs = gates
    rotated = augment(refs, [(5.0, 1.0, (0.0, 0.0))])
    d_plain = plain.check(rotated).distances
    res = gridded.check(rotated)
    for m in d_plain:
        assert np.all(res.distances[m] <= d_plain[m] + 1e-6)
    assert not res.accepted.any()
    assert plain.check(rotated).accepted.any()  # without the grid some 5-degree copies get through


def test_the_certificate_names_the_grid(gates: tuple) -> None:
    _, gridded, refs = gates
    rng = np.random.default_rng(0)
    res = gridded.run(lambda n: np.clip(rng.random((n, 32, 32)), 0, 1).astype(np.float32), quota=2, max_attempts=4)
    cert = res.certificate
    assert cert.config.rotations_deg == GRID["rotations_deg"] and cert.config.subpixel_shifts is True
    assert "rotations" in cert.metrics["pixel_rmse"].definition
    assert cert.reference.n_images == len(refs) and cert.reference.n_searched == len(refs) * 60


@pytest.mark.parametrize(("kw", "msg"), [({"rotations_deg": [45.0]}, "within"), ({"scales": [3.0]}, "within")])
def test_a_grid_out_of_range_is_refused(kw: dict, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        GateConfig(**kw)
