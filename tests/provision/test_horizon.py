"""Forecasts stopped at a horizon: exact below it, a capped lower bound beyond it."""

from __future__ import annotations

import pytest

from block.fleet.tracker import InstanceTracker
from block.policies import RoutingRequest
from block.profiles import load_profile
from block.provision.horizon import is_capped, predict_within
from block.replica import Replica, Request

PROFILE = load_profile("llama-2-7b-a30")


def busy_tracker(queued: int) -> InstanceTracker:
    """An A30 instance with `queued` requests, some steps in, plus a few routed since the snapshot."""
    tracker = InstanceTracker("i", PROFILE, added_delay="none")
    replica = Replica(tracker.config, PROFILE)
    for i in range(queued):
        replica.add(Request(f"r{i}", 100 + 37 * (i % 9), 40 + 23 * (i % 7), 0.0, 40 + 23 * (i % 7)))
    for _ in range(30):
        replica.step()
    tracker.observe(replica.snapshot(), at=replica.now)
    for i in range(3):
        tracker.on_routed(RoutingRequest(300, 120, id=f"p{i}"), replica.now + 0.01 * i)
    return tracker


@pytest.mark.parametrize("queued", [0, 5, 60])
def test_within_the_horizon_the_forecast_is_the_predictors(queued: int) -> None:
    tracker = busy_tracker(queued)
    now = (tracker.snapshot_at or 0.0) + 0.05
    for prompt, out in ((50, 20), (700, 300), (1500, 900)):
        request = RoutingRequest(prompt, out)
        full = tracker.predict(request, now)
        bounded = predict_within(tracker, request, now, horizon_s=1e6)
        assert full is not None and bounded is not None and not is_capped(bounded)
        # equal to float rounding: a state asked again reads its forecasts off a recorded run
        # (block/predictor/timeline.py), summing the same step times in another order
        for got, want in zip(
            (bounded.ttft_s, bounded.e2e_s, bounded.queue_delay_s),
            (full.ttft_s, full.e2e_s, full.queue_delay_s),
            strict=True,
        ):
            assert got == pytest.approx(want, rel=1e-9)


def test_beyond_the_horizon_the_forecast_is_capped() -> None:
    tracker = busy_tracker(60)
    now = (tracker.snapshot_at or 0.0) + 0.05
    request = RoutingRequest(800, 400)
    full = tracker.predict(request, now)
    assert full is not None
    horizon = full.e2e_s / 3
    capped = predict_within(tracker, request, now, horizon)
    assert capped is not None and is_capped(capped)
    assert capped.e2e_s == horizon < full.e2e_s  # a lower bound, the same for every capped instance
    assert tracker.last_forecast is capped
    # Just above the true E2E: exact again.
    again = predict_within(tracker, request, now, full.e2e_s * 1.01)
    assert again is not None and not is_capped(again) and again.e2e_s == pytest.approx(full.e2e_s, rel=1e-9)


def test_trackers_without_forecasts_pass_through() -> None:
    no_profile = InstanceTracker("b", None)
    no_profile.observe(Replica(no_profile.config, PROFILE).snapshot(), at=0.0)
    assert predict_within(no_profile, RoutingRequest(10, 10), 0.0, 5.0) is None
    assert predict_within(InstanceTracker("none", PROFILE), RoutingRequest(10, 10), 0.0, 5.0) is None
