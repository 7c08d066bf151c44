"""Forecast semantics on hand-built snapshots."""

from __future__ import annotations

import pytest

from block.policies.base import Forecast, RoutingRequest
from block.predictor import Forecaster, LengthRule, forecast
from block.predictor.stepwise import run_stepwise
from block.profiles.profile import BatchShape
from block.replica import ReplicaConfig, RequestState, Snapshot

CFG = ReplicaConfig(
    max_num_seqs=8, max_num_batched_tokens=64, block_size=16, num_gpu_blocks=64, max_model_len=512
)


def empty(now: float = 5.0) -> Snapshot:
    return Snapshot(CFG, now)


def test_empty_instance_ttft_is_the_prefill_time(profile) -> None:
    f = forecast(empty(), RoutingRequest(100, 1), profile)
    assert isinstance(f, Forecast)
    assert f.ttft_s == pytest.approx(profile.prefill_time(100, 64), abs=1e-9)
    assert f.e2e_s == f.ttft_s and f.queue_delay_s == 0.0 and f.added_delay_s == 0.0


def test_decode_steps_follow_the_first_token(profile) -> None:
    f = forecast(empty(), RoutingRequest(30, 4), profile)
    decodes = sum(profile.decode_step_time(1, 30 + i + 1) for i in range(3))
    assert f.e2e_s == pytest.approx(f.ttft_s + decodes, abs=1e-9)


def test_queue_behind_a_long_prefill(profile) -> None:
    # a 400-token prompt takes the whole budget for 6 steps; the candidate can start in the 7th
    snap = Snapshot(CFG, 0.0, waiting=[RequestState("long", 0.0, 400, expected_output_tokens=10)])
    f = forecast(snap, RoutingRequest(10, 1), profile)
    first_six = sum(
        profile.step_time(BatchShape(64, 1, 0, 0, 64 * d + 64 * 65 // 2)) for d in range(0, 384, 64)
    )
    assert f.queue_delay_s == pytest.approx(first_six, abs=1e-9)
    assert f.ttft_s > f.queue_delay_s
    assert f.ttft_s > forecast(empty(), RoutingRequest(10, 1), profile).ttft_s


def test_elapsed_time_is_spent_before_the_candidate_arrives(profile) -> None:
    snap = Snapshot(CFG, 0.0, running=[RequestState("r", 0.0, 20, 20, 1, 200)])
    now = forecast(snap, RoutingRequest(20, 5), profile)
    later = forecast(snap, RoutingRequest(20, 5), profile, elapsed_s=10.0)  # r has finished by then
    alone = forecast(empty(), RoutingRequest(20, 5), profile)
    assert later.e2e_s == pytest.approx(alone.e2e_s, abs=1e-9)
    assert now.e2e_s > alone.e2e_s


def test_preemption_when_the_cache_runs_out(profile) -> None:
    # 60 of 64 blocks in use by 4 long decodes: growth preempts the newest (the candidate, once admitted)
    running = [RequestState(f"r{i}", 0.0, 200, 239, 40, 250) for i in range(4)]
    snap = Snapshot(CFG, 0.0, running=running)
    f = forecast(snap, RoutingRequest(40, 100), profile, added_delay="full")
    ref = run_stepwise(snap, RoutingRequest(40, 100), profile, drain=True)
    assert ref.candidate is not None and ref.candidate.num_preemptions >= 1
    assert f.preemptions == ref.candidate.num_preemptions
    assert f.e2e_s == pytest.approx(ref.candidate.finish_time - snap.now, abs=1e-6)
    assert f.added_delay_s > 0


def test_unknown_territory_rules(profile) -> None:
    over = RequestState("over", 0.0, 20, 20 + 49, 50, expected_output_tokens=30)  # past its plan
    unknown = RequestState("unknown", 0.0, 20, 20 + 9, 10, None)
    rule = LengthRule(default_output_tokens=40, overrun_tokens=5)
    assert rule.total_output(over, CFG) == 55
    assert rule.total_output(unknown, CFG) == 40
    assert LengthRule(length_of=lambda s: 15).total_output(unknown, CFG) == 15
    assert LengthRule(length_of=lambda s: 3, overrun_tokens=7).total_output(unknown, CFG) == 17
    # capped by the context: 20 prompt + at most 492 output
    assert LengthRule(default_output_tokens=10_000).total_output(unknown, CFG) == 492
    snap = Snapshot(CFG, 0.0, running=[over])
    fc = Forecaster(snap, profile, rule=rule)
    assert fc.without_candidate()["over"] == pytest.approx(
        sum(profile.decode_step_time(1, 70 + i) for i in range(5)), abs=1e-9
    )


def test_pending_requests_queue_ahead_of_the_candidate(profile) -> None:
    pend = [RequestState(f"p{i}", 0.0, 60, expected_output_tokens=50) for i in range(6)]
    alone = forecast(empty(), RoutingRequest(60, 20), profile)
    behind = forecast(empty(), RoutingRequest(60, 20), profile, pending=pend)
    assert behind.queue_delay_s > alone.queue_delay_s
    assert behind.e2e_s > alone.e2e_s


def test_added_delay_horizon_counts_only_those_finishing_first(profile) -> None:
    running = [RequestState("short", 0.0, 20, 20, 1, 5), RequestState("long", 0.0, 20, 20, 1, 400)]
    snap = Snapshot(CFG, 0.0, running=running)
    h = forecast(snap, RoutingRequest(50, 10), profile, added_delay="horizon")
    full = forecast(snap, RoutingRequest(50, 10), profile, added_delay="full")
    assert 0 < h.added_delay_s < full.added_delay_s


def test_step_in_flight_ends_when_the_engine_says(profile) -> None:
    snap = Snapshot(CFG, 0.0, running=[RequestState("r", 0.0, 20, 20, 1, 3)])
    late = forecast(snap, RoutingRequest(10, 1), profile, step_end=0.5)
    # r's step is in flight until 0.5; the candidate's prefill joins r's next decode
    assert late.e2e_s == pytest.approx(0.5 + profile.step_time(BatchShape(11, 2, 1, 22, 55)), abs=1e-9)


def test_a_prompt_that_cannot_fit_is_refused(profile) -> None:
    with pytest.raises(ValueError):
        forecast(empty(), RoutingRequest(512, 1), profile)
