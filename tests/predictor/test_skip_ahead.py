"""The fast forecast equals the replica stepped token by token, to the microsecond."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from block.policies.base import RoutingRequest
from block.predictor.forecast import CANDIDATE, Arrivals, Forecaster
from block.predictor.lengths import LengthRule
from block.predictor.stepwise import run_stepwise
from block.replica import RequestState
from block.replica.fast_replica import SimRequest
from tests.predictor.strategies import (
    PROFILE,
    hashed_pending,
    hashed_requests,
    odd_snapshots,
    reached_snapshots,
)

US = 1e-6
candidates = st.builds(
    RoutingRequest, prompt_tokens=st.integers(1, 200), expected_output_tokens=st.integers(1, 150)
)
elapsed = st.one_of(st.just(0.0), st.floats(1e-4, 0.5))  # not within rounding of `now`
pendings = st.lists(st.tuples(st.integers(1, 120), st.integers(1, 80)), max_size=4)
rules = st.builds(LengthRule, default_output_tokens=st.integers(1, 100), overrun_tokens=st.integers(1, 20))


def fast_finish_times(snapshot, request, pending, elapsed_s, rule, drain):
    f = Forecaster(snapshot, PROFILE, pending=pending, rule=rule)
    hashes = () if request is None else f.candidate_hashes(request)
    sim, reqs = f._build(watch_all=drain or request is None, candidate=hashes)
    sim.advance_until(elapsed_s)
    cand = None
    if request is not None:
        p = f.forecast(request, elapsed_s, added_delay="none")
        cand = SimRequest(
            CANDIDATE,
            request.prompt_tokens,
            p.output_tokens,
            watched=True,
            hashes=f.candidate_hashes(request),
        )
        sim.add_waiting(cand)
    sim.run_until_watched_done()
    times = {r.key: r.finish for r in reqs if r.finish is not None}
    if cand is not None:
        times[CANDIDATE] = cand.finish
    return times, cand


def check(snapshot, request, pending_shapes, elapsed_s, rule, drain) -> None:
    cfg = snapshot.config
    pending = []
    for i, shape in enumerate(pending_shapes):
        if isinstance(shape, RequestState):  # built for the instance already
            pending.append(shape)
            continue
        p, o = shape
        p = min(p, cfg.max_model_len - 1, cfg.num_gpu_blocks * cfg.block_size - 1)
        pending.append(RequestState(f"p{i}", snapshot.now, p, expected_output_tokens=o))
    if request is not None:
        cap = min(cfg.max_model_len, cfg.num_gpu_blocks * cfg.block_size) - 1
        request = replace(request, prompt_tokens=min(request.prompt_tokens, cap))
    ref = run_stepwise(
        snapshot, request, PROFILE, pending=pending, elapsed_s=elapsed_s, rule=rule, drain=drain
    )
    expected = dict(ref.finish)
    if ref.candidate is not None:
        expected[CANDIDATE] = ref.candidate.finish_time - snapshot.now
    got, cand = fast_finish_times(snapshot, request, pending, elapsed_s, rule, drain)
    assert set(got) == set(expected)
    for k, t in expected.items():
        assert abs(got[k] - t) < US, (k, got[k], t)
    if cand is not None:
        c = ref.candidate
        assert abs(cand.first_token - (c.first_token_time - snapshot.now)) < US
        assert abs(cand.first_sched - (c.first_scheduled_time - snapshot.now)) < US
        assert cand.preemptions == c.num_preemptions


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reached_snapshots(), st.one_of(st.none(), candidates), pendings, elapsed, rules, st.booleans())
def test_fast_equals_stepwise_on_reached_snapshots(
    snapshot, request, pending, elapsed_s, rule, drain
) -> None:
    check(snapshot, request, pending, elapsed_s, rule, drain)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(odd_snapshots(), st.one_of(st.none(), candidates), pendings, elapsed, rules, st.booleans())
def test_fast_equals_stepwise_on_odd_snapshots(snapshot, request, pending, elapsed_s, rule, drain):
    check(snapshot, request, pending, elapsed_s, rule, drain)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reached_snapshots(), candidates, elapsed)
def test_forecast_numbers_match_stepwise(snapshot, request, elapsed_s) -> None:
    cfg = snapshot.config
    cap = min(cfg.max_model_len, cfg.num_gpu_blocks * cfg.block_size) - 1
    request = RoutingRequest(min(request.prompt_tokens, cap), request.expected_output_tokens)
    fast = Forecaster(snapshot, PROFILE).forecast(request, elapsed_s, added_delay="full")
    ref = run_stepwise(snapshot, request, PROFILE, elapsed_s=elapsed_s, drain=True)
    base = run_stepwise(snapshot, None, PROFILE)
    c, arrival = ref.candidate, snapshot.now + ref.arrival
    assert abs(fast.ttft_s - (c.first_token_time - arrival)) < US
    assert abs(fast.e2e_s - (c.finish_time - arrival)) < US
    assert abs(fast.queue_delay_s - (c.first_scheduled_time - arrival)) < US
    harm = sum(ref.finish[k] - base.finish[k] for k in base.finish)
    assert abs(fast.added_delay_s - harm) < US * max(1, len(base.finish))


def test_more_decodes_than_the_token_budget() -> None:
    """The budget ends inside the decode group: the exact slow path must take over."""
    from block.replica import ReplicaConfig, Snapshot

    cfg = ReplicaConfig(max_num_seqs=16, max_num_batched_tokens=4, block_size=4, num_gpu_blocks=200)
    running = [RequestState(f"r{i}", 0.0, 10 + i, 10 + i + 2, 3, 8 + i) for i in range(10)]
    snap = Snapshot(cfg, 0.0, running, [RequestState("w", 0.0, 9, expected_output_tokens=5)])
    for drain in (False, True):
        check(snap, RoutingRequest(12, 6), [(5, 3)], 0.05, LengthRule(), drain)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(reached_snapshots(), odd_snapshots()),
    candidates,
    elapsed,
    st.builds(Arrivals, st.floats(0.5, 60.0), st.integers(1, 200), st.integers(1, 150)),
)
def test_anticipating_forecast_equals_stepwise(snapshot, request, elapsed_s, arrivals) -> None:
    """Synthetic arrivals may be queued after a decode stretch instead of splitting it: same times."""
    cfg = snapshot.config
    cap = min(cfg.max_model_len, cfg.num_gpu_blocks * cfg.block_size) - 1
    request = RoutingRequest(min(request.prompt_tokens, cap), request.expected_output_tokens)
    fast = Forecaster(snapshot, PROFILE).forecast(request, elapsed_s, arrivals=arrivals)
    ref = run_stepwise(snapshot, request, PROFILE, elapsed_s=elapsed_s, arrivals=arrivals)
    c, arrival = ref.candidate, snapshot.now + ref.arrival
    assert abs(fast.ttft_s - (c.first_token_time - arrival)) < US
    assert abs(fast.e2e_s - (c.finish_time - arrival)) < US
    assert abs(fast.queue_delay_s - (c.first_scheduled_time - arrival)) < US
    assert fast.preemptions == c.num_preemptions


# -- prefix caching on: shared prefixes in the snapshot, the pending requests and the candidate ------


@st.composite
def cached_cases(draw, snapshots):
    """A snapshot whose prompts share prefixes, and a candidate and pending requests that share them too."""
    snapshot = draw(snapshots)
    request = draw(hashed_requests(snapshot.config))
    pending = draw(hashed_pending(snapshot, draw(pendings)))
    return snapshot, draw(st.one_of(st.none(), st.just(request))), pending


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(cached_cases(reached_snapshots(caching=True)), cached_cases(odd_snapshots(caching=True))),
    elapsed,
    rules,
    st.booleans(),
)
def test_fast_equals_stepwise_with_prefix_caching(case, elapsed_s, rule, drain) -> None:
    snapshot, request, pending = case
    check(snapshot, request, pending, elapsed_s, rule, drain)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cached_cases(reached_snapshots(caching=True)), elapsed)
def test_cached_forecast_numbers_match_stepwise(case, elapsed_s) -> None:
    snapshot, request, _ = case
    if request is None:
        return
    fast = Forecaster(snapshot, PROFILE).forecast(request, elapsed_s, added_delay="full")
    ref = run_stepwise(snapshot, request, PROFILE, elapsed_s=elapsed_s, drain=True)
    base = run_stepwise(snapshot, None, PROFILE)
    c, arrival = ref.candidate, snapshot.now + ref.arrival
    assert abs(fast.ttft_s - (c.first_token_time - arrival)) < US
    assert abs(fast.e2e_s - (c.finish_time - arrival)) < US
    assert abs(fast.queue_delay_s - (c.first_scheduled_time - arrival)) < US
    harm = sum(ref.finish[k] - base.finish[k] for k in base.finish)
    assert abs(fast.added_delay_s - harm) < US * max(1, len(base.finish))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(cached_cases(reached_snapshots(caching=True)), cached_cases(odd_snapshots(caching=True))),
    elapsed,
    st.builds(Arrivals, st.floats(0.5, 60.0), st.integers(1, 200), st.integers(1, 150)),
)
def test_cached_anticipating_forecast_equals_stepwise(case, elapsed_s, arrivals) -> None:
    snapshot, request, _ = case
    if request is None:
        return
    fast = Forecaster(snapshot, PROFILE).forecast(request, elapsed_s, arrivals=arrivals)
    ref = run_stepwise(snapshot, request, PROFILE, elapsed_s=elapsed_s, arrivals=arrivals)
    c, arrival = ref.candidate, snapshot.now + ref.arrival
    assert abs(fast.ttft_s - (c.first_token_time - arrival)) < US
    assert abs(fast.e2e_s - (c.finish_time - arrival)) < US
    assert fast.preemptions == c.num_preemptions
