"""Online calibration from token streams: it finds an engine's true speed per phase, and a stall or a run of
outliers does not poison it."""

from __future__ import annotations

import random

import pytest

from block.fleet.calibration import FACTOR_BOUNDS, InstanceCalibration
from block.fleet.listeners import Routed
from block.fleet.tracker import InstanceTracker
from block.profiles.profile import Profile
from block.replica import Replica, ReplicaConfig, Request
from block.replica.snapshot import Snapshot
from block.request import RoutingRequest
from tests.conftest import make_test_profile


def run_engine(
    cal: InstanceCalibration,
    profile: Profile,
    decode_factor: float,
    prefill_factor: float,
    *,
    requests: int = 60,
    rate: float = 20.0,
    seed: int = 0,
    stall: tuple[int, float] | None = None,
) -> Replica:
    """A real replica whose steps take the profile's time x a factor per phase (x `stall[1]` for the
    step numbered `stall[0]`), streaming every token to `cal` as the router would see it."""
    config = ReplicaConfig.from_dict(profile.engine_defaults)
    rep = Replica(config, profile)
    rng = random.Random(seed)
    arrivals, t = [], 0.0
    for i in range(requests):
        t += rng.expovariate(rate)
        arrivals.append(Request(f"r{i}", rng.randint(8, 150), rng.randint(4, 40), t))
    steps = 0
    while arrivals or rep.has_work:
        if not rep.has_work:
            rep.advance_to(max(rep.now, arrivals[0].arrival_time))
        while arrivals and arrivals[0].arrival_time <= rep.now:
            q = arrivals.pop(0)
            routed = Routed(RoutingRequest(q.prompt_tokens, q.output_tokens, id=q.id), q.arrival_time)
            cal.routed("i", routed)
            rep.add(q)
        batch = rep.schedule()
        if not batch.requests:
            continue
        shape = batch.shape()
        mean = profile.step_time(shape)
        duration = mean * (prefill_factor if shape.prefill_attention_pairs else decode_factor)
        if stall is not None and steps == stall[0]:
            duration *= stall[1]
        outcome = rep.complete(batch, rep.now + duration)
        steps += 1
        for q in outcome.emitted:
            cal.tokens("i", q.id, 1, outcome.end)
        for q in outcome.finished:
            cal.finished("i", q.id, outcome.end)
    return rep


def calibration(profile: Profile) -> InstanceCalibration:
    return InstanceCalibration(profile, profile.engine_defaults["max_num_batched_tokens"])


@pytest.mark.parametrize(("decode", "prefill"), [(1.0, 1.0), (1.5, 1.5), (0.7, 1.3), (2.0, 0.6)])
def test_converges_to_the_engines_true_speed_per_phase(decode: float, prefill: float) -> None:
    profile = make_test_profile()
    cal = calibration(profile)
    run_engine(cal, profile, decode, prefill)
    assert cal.decode.samples >= 50 and cal.prefill.samples >= 20
    assert cal.decode.factor == pytest.approx(decode, rel=0.02)
    assert cal.prefill.factor == pytest.approx(prefill, rel=0.05)
    # forecasts use the factors rounded to ~2% steps; a right profile is used as it is
    d, p = cal.scales()
    assert d == pytest.approx(decode, rel=0.03) and p == pytest.approx(prefill, rel=0.06)
    if decode == prefill == 1.0:
        assert profile.scaled(d, p) is profile


def test_a_stall_does_not_poison_it_and_factors_stay_bounded() -> None:
    profile = make_test_profile()
    steady = calibration(profile)
    run_engine(steady, profile, 1.3, 1.3)
    stalled = calibration(profile)
    run_engine(stalled, profile, 1.3, 1.3, stall=(300, 200.0))  # one step 200x its time (a 2 s stall)
    assert stalled.decode.factor == pytest.approx(steady.decode.factor, rel=0.02)
    assert stalled.prefill.factor == pytest.approx(steady.prefill.factor, rel=0.05)

    # an engine far outside the bounds: clamped, whatever it does
    lo, hi = FACTOR_BOUNDS
    for factor, bound in ((50.0, hi), (0.01, lo)):
        cal = calibration(profile)
        run_engine(cal, profile, factor, factor, requests=20)
        assert cal.decode.factor == pytest.approx(bound) and cal.prefill.factor == pytest.approx(bound)

    # outliers in fewer than half the window move the median by little
    cal = calibration(profile)
    run_engine(cal, profile, 1.0, 1.0)
    for k in range(cal.decode.window // 2 - 2):
        cal.decode.add(1000.0 if k % 2 else 1e-6, 1.0)
    assert 0.9 < cal.decode.factor < 1.2


def test_the_tracker_forecasts_with_the_calibrated_profile() -> None:
    profile = make_test_profile()
    config = ReplicaConfig.from_dict(profile.engine_defaults)
    tracker = InstanceTracker("i", profile, config, calibrate=True)
    assert tracker.calibration is not None
    tracker.observe(Snapshot(config, 0.0, [], []), 0.0)
    request = RoutingRequest(100, 30)
    before = tracker.predict(request, 0.0)
    run_engine(tracker.calibration, profile, 1.6, 1.6)
    after = tracker.predict(request, 0.0)  # the same idle instance, its profile now 1.6x slower
    assert before is not None and after is not None
    assert after.e2e_s / before.e2e_s == pytest.approx(1.6, rel=0.04)
    assert after.ttft_s / before.ttft_s == pytest.approx(1.6, rel=0.06)


def test_scaled_step_cost_is_the_profile_times_the_factor_of_the_steps_phase() -> None:
    profile = make_test_profile()
    scaled = profile.scaled(1.25, 0.8)
    base, cost = profile.cost, scaled.cost
    base.reserve(64)
    cost.reserve(64)
    assert cost.seconds(8, 8, 500) == pytest.approx(1.25 * base.seconds(8, 8, 500))
    assert cost.seconds(40, 3, 100, 600) == pytest.approx(0.8 * base.seconds(40, 3, 100, 600))
    assert cost.decodes(6, 10, 300) == pytest.approx(1.25 * base.decodes(6, 10, 300))
    assert cost.linear is base.linear  # shared, built once
    assert scaled.to_dict() == profile.to_dict()  # a runtime view: the saved profile is the nominal one
    assert profile.scaled(1.25, 0.8) is scaled
