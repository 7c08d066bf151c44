"""Model error kinds: each stays in its band, is a pure function of (seed, instance, time), and moves the
way its kind says (static: never; drift: slowly, over minutes; correlated: the whole fleet at once)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from block.profiles.model_error import (
    CORRELATED_CHANCE,
    CORRELATED_STRETCH_S,
    KINDS,
    ModelError,
    TrueStepTime,
    parse_model_error,
)

errors = st.floats(0.0, 0.95)
seeds = st.integers(0, 2**31)
instances = st.integers(0, 10_000)
times = st.lists(st.floats(0.0, 1e6), min_size=1, max_size=40)


def test_parse() -> None:
    assert parse_model_error("static:0.2") == ModelError("static", 0.2, 0)
    assert parse_model_error(" Drift:0.4 ", seed=3) == ModelError("drift", 0.4, 3)
    assert str(parse_model_error("correlated:0.10")) == "correlated:0.1"
    for nothing in (None, "", "none", "NONE"):
        assert parse_model_error(nothing) is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("static", "write KIND:E"),
        ("static:abc", "write KIND:E"),
        ("static:nan", "write KIND:E"),
        ("warp:0.2", "unknown model error kind 'warp'"),
        ("drift:20", "write 0.2 for 20%"),
        ("static:1", "not a fraction"),
        ("static:-0.1", "not a fraction"),
    ],
)
def test_bad_input_is_a_one_line_error(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as e:
        parse_model_error(text)
    assert "\n" not in str(e.value)


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(KINDS), e=errors, seed=seeds, instance=instances, ts=times)
def test_every_kind_stays_in_its_band_and_is_reproducible(
    kind: str, e: float, seed: int, instance: int, ts: list[float]
) -> None:
    error = ModelError(kind, e, seed)
    speed, factor = error.speed(instance), error.factor(instance)
    values = [speed(t) for t in ts]
    high = 1.0 if kind == "correlated" else 1.0 + e  # correlated only ever slows
    assert all(1.0 - e - 1e-12 <= v <= high + 1e-12 for v in values)
    assert [factor(t) for t in ts] == [1.0 / v for v in values]  # steps take nominal / speed
    # a pure function of (seed, instance, time): a fresh copy asked in the reverse order agrees
    g = ModelError(kind, e, seed).speed(instance)
    assert [g(t) for t in reversed(ts)] == list(reversed(values))


def test_static_is_constant_per_instance_and_spread_over_the_band() -> None:
    error = ModelError("static", 0.3, seed=0)
    speeds = [error.speed(i)(0.0) for i in range(200)]
    assert all(error.speed(i)(t) == speeds[i] for i in range(5) for t in (1.0, 100.0, 1e5))
    assert min(speeds) < 0.71 and max(speeds) > 1.29  # over [0.7, 1.3]
    assert speeds != [ModelError("static", 0.3, seed=1).speed(i)(0.0) for i in range(200)]
    # one instance over many seeds: uniform over the band
    one = sorted(ModelError("static", 0.3, seed=s).speed(5)(0.0) for s in range(400))
    assert one[0] < 0.72 and one[-1] > 1.28 and 0.97 < one[200] < 1.03
    # a fleet's draws are stratified: whatever the seed, 12 instances average close to the profile's
    # speed (plain uniform draws stray by 0.17 x E at one standard deviation, 0.5 x E now and then)
    for seed in range(200):
        fleet = [ModelError("static", 0.3, seed=seed).speed(i)(0.0) for i in range(12)]
        assert abs(sum(fleet) / 12 - 1.0) < 0.3 * 0.17
        assert min(fleet) < 0.85 and max(fleet) > 1.15  # both slow and fast engines


def test_drift_wanders_over_minutes_not_seconds() -> None:
    e = 0.2
    for instance in range(20):
        f = ModelError("drift", e, seed=0).speed(instance)
        values = [f(float(t)) for t in range(0, 1200)]
        assert max(values) - min(values) > e / 2  # it really moves within 20 minutes...
        steps = [abs(b - a) for a, b in zip(values, values[1:], strict=False)]
        assert max(steps) < e * 2 * math.pi / 60  # ...but slowly: periods of a minute or more
    assert ModelError("drift", e).speed(0)(30.0) != ModelError("drift", e).speed(1)(30.0)


def test_correlated_slowdowns_are_shared_stretches_of_seconds() -> None:
    e = 0.4
    error = ModelError("correlated", e, seed=5)
    fleet = [error.speed(i) for i in range(6)]
    grid = [k * 0.05 for k in range(int(1800 / 0.05))]  # half an hour
    series = [fleet[0](t) for t in grid]
    for f in fleet[1:]:
        assert [f(t) for t in grid[::50]] == series[::50]  # every instance at once
    slowed = sum(v < 1.0 for v in series) / len(series)
    assert 0.15 < slowed < 0.4  # two epochs in three hold 2-10 s of 15
    assert min(series) < 1 - e * 0.9 and max(v for v in series if v < 1) > 1 - e * 0.6
    # stretches: maximal runs of one slowed value last 2-10 s
    runs, start = [], None
    for t, v, prev in zip(grid[1:], series[1:], series, strict=False):
        if v < 1 and v != prev:
            start = t
        elif prev < 1 and v != prev and start is not None:
            runs.append(t - start)
            start = None
    assert len(runs) > 50
    lo, hi = CORRELATED_STRETCH_S
    assert all(lo - 0.1 <= r <= hi + 0.1 for r in runs)
    other = ModelError("correlated", e, seed=6).speed(0)
    assert [other(t) for t in grid] != series  # another fleet seed, other stretches


def test_true_step_time_takes_the_factor_at_each_steps_own_start() -> None:
    """Durations drawn in a row while the replica's clock stands still (a decode stretch skipped in one
    go) each get the factor where that step starts, not where the stretch started."""
    change_at = 1.0

    def factor(t: float) -> float:
        return 1.0 if t < change_at else 2.0

    clock = [0.0]
    steps = TrueStepTime(factor, lambda: clock[0])
    drawn = [steps(0.3) for _ in range(5)]  # starts 0, 0.3, 0.6, 0.9, then 1.2: past the change
    assert drawn == [0.3, 0.3, 0.3, 0.3, 0.6]
    clock[0] = 0.3 * 4 + 0.6  # the replica ran them; its clock moved
    assert steps(0.3) == 0.6
    clock[0] = 5.0  # the replica idled until a new arrival: the cursor restarts at its clock
    assert steps(0.3) == 0.6
    clock[0] = 0.5
    assert steps(0.3) == 0.3
    noisy = TrueStepTime(lambda _t: 1.5, lambda: 0.0, noise=lambda d: d + 1.0)
    assert noisy(2.0) == 4.0  # model error first, then the step noise


def test_the_fleets_mean_speed_is_the_share_of_throughput_it_keeps() -> None:
    # static is stratified so a fleet averages the profile; correlated slows every engine at once
    assert ModelError("static", 0.4, 0).mean_speed(12, 100.0) == pytest.approx(1.0, abs=0.03)
    slowed = ModelError("correlated", 0.4, 0).mean_speed(12, 600.0)
    expected = 1 - CORRELATED_CHANCE * 6.0 / 15.0 * 0.4 * 0.75  # chance x mean stretch share x mean depth
    assert slowed == pytest.approx(expected, abs=0.025)
    assert ModelError("correlated", 0.2, 0).mean_speed(1, 600.0) > slowed
