"""The site's privacy policy: a coordinator's request can only make the gate stricter."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsynth.config import load_toml
from fedsynth.errors import ConfigError
from fedsynth.federation.config import SiteSettings
from fedsynth.privacy import GateConfig, GatePolicy, PolicyRefusal

METRICS = ["pixel_rmse", "ncc_robust"]


@st.composite
def requests(draw):
    metrics = draw(st.lists(st.sampled_from(METRICS), min_size=1, max_size=2, unique=True))
    mode = draw(st.sampled_from(["calibrated", "absolute"]))
    thr = st.floats(1e-4, 0.5)
    if mode == "absolute":
        thresholds = {m: draw(thr) for m in metrics}
    else:
        thresholds = draw(st.dictionaries(st.sampled_from(metrics), thr, max_size=len(metrics)))
    gate = GateConfig(metrics=metrics, mode=mode, percentile=draw(st.floats(0.5, 50.0)), thresholds=thresholds,
                      max_shift=draw(st.integers(0, 8)), flips=draw(st.booleans()),
                      require_companions=draw(st.booleans()))
    return gate, draw(st.integers(1, 20_000)), draw(st.integers(1, 80_000))


@st.composite
def policies(draw):
    metrics = draw(st.lists(st.sampled_from(METRICS), min_size=1, max_size=2, unique=True))
    pct = draw(st.one_of(st.none(), st.floats(0.5, 50.0)))
    floors = draw(st.dictionaries(st.sampled_from(METRICS), st.floats(1e-4, 0.5), max_size=2))
    if pct is None:
        floors = {**{m: 0.01 for m in metrics}, **floors}
    return GatePolicy(metrics=metrics, min_percentile=pct, min_thresholds=floors,
                      require_companions=draw(st.booleans()), min_max_shift=draw(st.integers(0, 8)),
                      require_flips=draw(st.booleans()), max_images=draw(st.integers(1, 20_000)),
                      max_candidates=draw(st.integers(1, 80_000)))


@settings(max_examples=300, deadline=None)
@given(policy=policies(), request=requests())
def test_the_gate_run_is_never_weaker_than_the_policy_or_the_request(policy, request):
    """Refused, or the effective gate satisfies the policy and the request alike."""
    gate, quota, attempts = request
    try:
        eff = policy.apply(gate, quota, attempts)
    except PolicyRefusal as err:
        assert policy.shortfalls(gate, quota, attempts) and "privacy policy" in str(err)
        return
    assert policy.shortfalls(eff, quota, attempts) == []
    assert GatePolicy.from_request(gate, quota, attempts).shortfalls(eff, quota, attempts) == []
    assert set(eff.metrics) >= set(policy.metrics) | set(gate.metrics)
    for m, floor in policy.min_thresholds.items():
        if m in eff.metrics:
            assert eff.thresholds[m] >= floor
    for m, t in gate.thresholds.items():
        assert eff.thresholds[m] >= t  # a requested absolute threshold is at least a floor of what runs
    if policy.min_percentile is not None:
        assert eff.mode == "calibrated" and eff.percentile >= policy.min_percentile
    assert eff.require_companions >= policy.require_companions


def test_the_default_policy_refuses_weaker_requests_with_reasons():
    policy = GatePolicy()
    weak = GateConfig(metrics=["pixel_rmse"], percentile=1.0, max_shift=2, flips=False)
    with pytest.raises(PolicyRefusal) as err:
        policy.apply(weak, quota=20_000, max_attempts=10)
    msg = str(err.value)
    for part in ("lack the required ['ncc_robust']", "percentile 1 is below the floor 5", "10000"):
        assert part in msg, msg
    assert "\n" not in msg
    same = GateConfig()
    assert policy.apply(same, 120, 480) == same  # the default request runs unchanged under the default policy


def test_an_absolute_request_runs_calibrated_with_its_thresholds_as_floors():
    eff = GatePolicy().apply(GateConfig(mode="absolute", thresholds={"pixel_rmse": 0.2, "ncc_robust": 0.01}), 5, 10)
    assert eff.mode == "calibrated" and eff.percentile == 5.0
    assert eff.thresholds == {"pixel_rmse": 0.2, "ncc_robust": 0.01}


@pytest.mark.parametrize("value", [0.0, -0.1, float("nan")])
def test_zero_negative_or_nan_thresholds_are_invalid_everywhere(value):
    with pytest.raises(ValueError, match="positive"):
        GateConfig(mode="absolute", metrics=["pixel_rmse"], thresholds={"pixel_rmse": value})
    with pytest.raises(ValueError, match="positive"):
        GateConfig(metrics=["pixel_rmse"], thresholds={"pixel_rmse": value})  # as a calibrated floor
    with pytest.raises(ValueError, match="positive"):
        GatePolicy(min_thresholds={"pixel_rmse": value})


def test_site_toml_privacy_section_and_its_default(tmp_path):
    base = '[site]\nid = "a"\nmodality = "ct"\ndata_dir = "/d"\nworkdir = "/w"\n'
    (tmp_path / "plain.toml").write_text(base)
    assert load_toml(tmp_path / "plain.toml", SiteSettings).privacy == GatePolicy()
    (tmp_path / "strict.toml").write_text(base + "[privacy]\nmin_percentile = 10\nrequire_companions = true\n"
                                          'min_thresholds = {pixel_rmse = 0.04}\n')
    strict = load_toml(tmp_path / "strict.toml", SiteSettings).privacy
    assert strict.min_percentile == 10 and strict.require_companions and strict.digest() != GatePolicy().digest()
    (tmp_path / "zero.toml").write_text(base + "[privacy]\nmin_thresholds = {pixel_rmse = 0}\n")
    with pytest.raises(ConfigError, match="privacy.min_thresholds"):
        load_toml(tmp_path / "zero.toml", SiteSettings)


def test_a_site_can_require_the_transform_grid_and_old_digests_stay_valid() -> None:
    from fedsynth.privacy import GateConfig, GatePolicy, PolicyRefusal

    plain = GatePolicy()
    assert plain.digest() == GatePolicy.model_validate(plain.model_dump()).digest()
    strict = GatePolicy(min_rotation_deg=5, min_scale_change=0.05, require_subpixel_shifts=True)
    assert strict.digest() != plain.digest()
    with pytest.raises(PolicyRefusal, match=r"rotations reach \+-0 deg.*scales reach \+-0.*half-pixel"):
        strict.apply(GateConfig(), quota=10, max_attempts=40)
    with pytest.raises(PolicyRefusal, match=r"rotations reach \+-2.5 deg"):  # one side short
        strict.apply(GateConfig(rotations_deg=[-5, 2.5], scales=[0.95, 1.05], subpixel_shifts=True), 10, 40)
    ok = GateConfig(rotations_deg=[-5, -2.5, 2.5, 5], scales=[0.95, 1.05], subpixel_shifts=True)
    assert strict.apply(ok, 10, 40).rotations_deg == [-5, -2.5, 2.5, 5]
    # the coordinator's side: a certificate whose grid is smaller than the request's falls short of it
    floor = GatePolicy.from_request(ok, 10, 40)
    assert floor.shortfalls(GateConfig(), 10, 40) and not floor.shortfalls(ok, 10, 40)
