"""The floor under a forecast is a true lower bound: pruning by it never changes a choice."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from block.predictor.bench import busy_snapshot
from block.predictor.forecast import Arrivals, Forecaster
from block.profiles import load_profile
from block.replica import RequestState
from block.request import RoutingRequest
from tests.predictor.strategies import PROFILE, odd_snapshots, reached_snapshots

candidates = st.builds(
    RoutingRequest,
    prompt_tokens=st.integers(1, 300),
    expected_output_tokens=st.integers(1, 200),
    max_tokens=st.one_of(st.none(), st.integers(1, 200)),
)
pendings = st.lists(st.tuples(st.integers(1, 120), st.integers(1, 80), st.floats(-0.05, 0.2)), max_size=4)
elapsed = st.one_of(st.just(0.0), st.floats(1e-4, 0.5))
# the test profile, one that charges every request a fixed and a per-token overhead, and calibrated
# views of it (an instance measured faster or slower than its profile, per phase)
profiles = st.sampled_from(
    [
        PROFILE,
        replace(PROFILE, request_overhead_s=0.003, request_overhead_per_token_s=2e-5),
        PROFILE.scaled(0.5, 0.7),
        PROFILE.scaled(1.6, 0.4),
    ]
)


def check(snapshot, profile, request, pending_shapes, elapsed_s, in_flight_s, anticipate) -> None:
    cfg = snapshot.config
    cap = min(cfg.max_model_len, cfg.num_gpu_blocks * cfg.block_size) - 1
    pending = [
        RequestState(f"p{i}", snapshot.now, min(p, cap), expected_output_tokens=o)
        for i, (p, o, _) in enumerate(pending_shapes)
    ]
    at = [t for _, _, t in pending_shapes]
    step_end = None if in_flight_s is None else snapshot.now + in_flight_s
    fc = Forecaster(snapshot, profile, pending=pending, pending_at=at, step_end=step_end)
    request = replace(request, prompt_tokens=min(request.prompt_tokens, cap))
    arrivals = Arrivals(20.0, 40, 30) if anticipate else None
    f = fc.forecast(request, elapsed_s, arrivals=arrivals)
    assert fc.floor.e2e_s(request, elapsed_s) <= f.e2e_s
    capped = fc.forecast(request, elapsed_s, horizon_s=0.05)
    assert fc.floor.e2e_s(request, elapsed_s, 0.05) <= capped.e2e_s


in_flight = st.one_of(st.none(), st.floats(0.0, 0.05))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reached_snapshots(), profiles, candidates, pendings, elapsed, in_flight, st.booleans())
def test_floor_below_forecast_on_reached_states(snapshot, profile, request, pending, el, fl, ant) -> None:
    check(snapshot, profile, request, pending, el, fl, ant)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(odd_snapshots(), profiles, candidates, pendings, elapsed, in_flight, st.booleans())
def test_floor_below_forecast_on_odd_states(snapshot, profile, request, pending, el, fl, ant) -> None:
    check(snapshot, profile, request, pending, el, fl, ant)


def test_floor_is_close_on_busy_paper_snapshots() -> None:
    """Below the forecast and, on the paper's A30 profile with 48 running, within reach of it (the
    closer, the more a decision prunes)."""
    profile = load_profile("llama-2-7b-a30")
    ratios = []
    for seed in range(20):
        for kv_usage in (0.3, 0.95):
            snap = busy_snapshot(profile, 48, 32 * (seed % 3), 512, 256, kv_usage=kv_usage, seed=seed)
            fc = Forecaster(snap, profile)
            request = RoutingRequest(300 + 37 * seed, 200)
            ratios.append(fc.floor.e2e_s(request, 0.01) / fc.forecast(request, 0.01).e2e_s)
    assert max(ratios) <= 1.0
    assert sorted(ratios)[len(ratios) // 2] >= 0.5
