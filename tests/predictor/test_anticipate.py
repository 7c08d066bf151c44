"""Anticipated arrivals (opt-in), and forecasts stopped at a horizon."""

from __future__ import annotations

from dataclasses import replace

import pytest

from block.fleet.arrival_log import ArrivalLog, FleetLog
from block.fleet.tracker import InstanceTracker
from block.policies.base import RoutingRequest
from block.predictor.forecast import Arrivals, Forecaster
from block.replica import ReplicaConfig, RequestState, Snapshot

CFG = ReplicaConfig(
    max_num_seqs=8, max_num_batched_tokens=64, block_size=16, num_gpu_blocks=64, max_model_len=512
)


def busy() -> Snapshot:
    running = [RequestState(f"r{i}", 0.0, 20, 20 + i, i, 60) for i in range(1, 4)]
    return Snapshot(
        CFG, 0.0, running=running, waiting=[RequestState("w", 0.0, 30, expected_output_tokens=40)]
    )


def test_arrivals_raise_e2e_and_a_zero_rate_changes_nothing(profile) -> None:
    fc = Forecaster(busy(), profile)
    request = RoutingRequest(40, 50)
    plain = fc.forecast(request, 0.01, added_delay="horizon")
    same = fc.forecast(request, 0.01, added_delay="horizon", arrivals=Arrivals(0.0, 30, 40))
    assert same == plain
    more = fc.forecast(request, 0.01, added_delay="horizon", arrivals=Arrivals(50.0, 30, 40))
    assert more.e2e_s > plain.e2e_s
    assert more.added_delay_s == plain.added_delay_s  # the harm is measured without them
    assert more.output_tokens == plain.output_tokens


def test_tracker_anticipates_only_when_asked(profile) -> None:
    request = RoutingRequest(40, 50)
    e2e = []
    for on in (False, True):
        t = InstanceTracker(
            "i", profile, CFG, added_delay="none", anticipate_arrivals=on, anticipate_window_s=1.0
        )
        t.observe(busy(), at=10.0)
        assert t.recent_arrivals(10.0) is None
        for k in range(20):
            t.on_routed(RoutingRequest(30, 40, id=f"x{k}"), 9.01 + k * 0.049)
        assert t.recent_arrivals(10.0) == Arrivals(20.0, 30, 40)
        f = t.predict(request, 10.0)
        assert f is not None
        e2e.append(f.e2e_s)
    assert e2e[1] > e2e[0]


def test_a_shared_fleet_log_anticipates_the_fleet_rate_per_instance(profile) -> None:
    fleet = FleetLog(instances=4)
    trackers = [
        InstanceTracker(f"i{n}", profile, CFG, anticipate_arrivals=True, anticipate_window_s=1.0, fleet=fleet)
        for n in range(4)
    ]
    # 40 requests in the last second, all to instance 0: each instance should expect 10 per second.
    for k in range(40):
        trackers[0].on_routed(RoutingRequest(30 + k % 2 * 2, 40, id=f"x{k}"), 9.01 + k * 0.0245)
    expected = Arrivals(10.0, 31, 40)
    assert all(t.recent_arrivals(10.0) == expected for t in trackers)
    assert trackers[0].routed_in_last(1.0, 10.0) == 40 and trackers[1].routed_in_last(1.0, 10.0) == 0
    fleet.instances = 2  # two left rotation: the rest take their share
    assert trackers[1].recent_arrivals(10.0) == Arrivals(20.0, 31, 40)


def test_arrival_log_forgets_old_routes_and_averages_lengths() -> None:
    log = ArrivalLog(keep_s=5.0)
    for k in range(10):
        log.record(float(k), 10 * (k + 1), 5)
    assert log.count_since(-1.0) == 6  # times 0..3 fell out of the 5 s kept
    assert log.arrivals(9.0, 2.0) == Arrivals(1.0, 95, 5)  # times 8 and 9 (after 7)
    assert log.arrivals(9.0, 2.0, share=0.0) is None
    assert ArrivalLog().arrivals(1.0, 1.0) is None


def test_a_horizon_caps_only_forecasts_that_run_past_it(profile) -> None:
    fc = Forecaster(busy(), profile)
    request = RoutingRequest(40, 50)
    full = fc.forecast(request, 0.01)
    assert not full.capped
    again = fc.forecast(request, 0.01, horizon_s=full.e2e_s * 1.01)  # read off the recorded run now
    assert not again.capped and again.steps == full.steps
    for name in ("ttft_s", "e2e_s", "queue_delay_s"):
        assert getattr(again, name) == pytest.approx(getattr(full, name), rel=1e-9)
    capped = fc.forecast(request, 0.01, horizon_s=full.e2e_s / 2)
    assert capped.capped and capped.e2e_s == full.e2e_s / 2 and capped.added_delay_s == 0.0
    assert capped.ttft_s <= capped.e2e_s and capped.queue_delay_s <= capped.e2e_s


def test_a_request_overhead_delays_the_candidate_and_the_pending_requests(profile) -> None:
    slow = replace(profile, request_overhead_s=0.05)
    request = RoutingRequest(40, 50)
    idle = Snapshot(CFG, 0.0)
    base = Forecaster(idle, profile).forecast(request)
    late = Forecaster(idle, slow).forecast(request)
    assert late.e2e_s == pytest.approx(base.e2e_s + 0.05) and late.ttft_s == pytest.approx(base.ttft_s + 0.05)
    per_token = Forecaster(idle, replace(profile, request_overhead_per_token_s=1e-4)).forecast(request)
    assert per_token.e2e_s == pytest.approx(base.e2e_s + 40 * 1e-4)  # a 40-token prompt
    # A request routed just before the candidate still queues ahead of it, both late by the overhead.
    ahead = [RequestState("p", 0.0, 300, expected_output_tokens=10)]
    for prof in (profile, slow):
        f = Forecaster(idle, prof, pending=ahead, pending_at=[0.0]).forecast(request, 0.001)
        assert f.queue_delay_s > 0.0
