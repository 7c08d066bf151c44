"""The floor under a forecast is a true lower bound: pruning by it never changes a choice."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from block.predictor.bench import busy_snapshot
from block.predictor.floor import MARGIN, step_floor
from block.predictor.forecast import Arrivals, Forecaster
from block.prefix import chain_hashes
from block.profiles import load_profile
from block.replica import ReplicaConfig, RequestState, Snapshot
from block.request import RoutingRequest
from tests.predictor.strategies import (
    PROFILE,
    hashed_pending,
    hashed_requests,
    odd_snapshots,
    reached_snapshots,
)

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


# -- prefix caching on: prompts share prefixes with the snapshot's, the pending requests' and free blocks --


@st.composite
def cached_states(draw):
    """A caching snapshot, pending requests and a candidate whose prompts share prefixes with it."""
    snapshot = draw(st.one_of(reached_snapshots(caching=True), odd_snapshots(caching=True)))
    request = draw(
        hashed_requests(
            snapshot.config,
            st.integers(1, 300),
            st.integers(1, 200),
            st.one_of(st.none(), st.integers(1, 200)),
        )
    )
    shapes = draw(pendings)
    pending = draw(hashed_pending(snapshot, [(p, o) for p, o, _ in shapes]))
    at = [t for _, _, t in shapes]
    return snapshot, request, pending, at


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cached_states(), profiles, elapsed, in_flight)
def test_floor_below_forecast_with_prefix_caching(state, profile, elapsed_s, in_flight_s) -> None:
    """The floor charges only the tokens that cannot be found cached: still below the forecast, which
    models every hit (and the fleet's ready order: ready_s + own_s below it too)."""
    snapshot, request, pending, at = state
    step_end = None if in_flight_s is None else snapshot.now + in_flight_s
    fc = Forecaster(snapshot, profile, pending=pending, pending_at=at, step_end=step_end)
    f = fc.forecast(request, elapsed_s)
    assert fc.floor.e2e_s(request, elapsed_s) <= f.e2e_s
    capped = fc.forecast(request, elapsed_s, horizon_s=0.05)
    assert fc.floor.e2e_s(request, elapsed_s, 0.05) <= capped.e2e_s
    steps = step_floor(profile, snapshot.config)
    own_steps = steps.own_steps(request, snapshot.config)
    ready = fc.ready_each(elapsed_s, [own_steps])[0][0] + steps.own_s(request, snapshot.config) - elapsed_s
    assert ready * (1 - 2 * MARGIN) <= f.e2e_s
    # from a checkpoint (the queue ahead replayed with the cache, as Forecasts.prepare builds one)
    tight = fc.checkpoint_floor(request, elapsed_s, prepare=True)  # (None where the cache is modelled)
    assert tight is None or tight <= f.e2e_s
    fc.checkpoint()
    ready = fc.ready_each(elapsed_s, [own_steps])[0][0] + steps.own_s(request, snapshot.config) - elapsed_s
    assert ready * (1 - 2 * MARGIN) <= f.e2e_s


def test_floor_counts_a_cached_prompt_as_cached() -> None:
    """An idle instance holding the candidate's whole prompt cached (free blocks of a finished request):
    the forecast prefills one block; the floor must not charge the prompt (it did not bound it then)."""
    profile = load_profile("llama-2-7b-a30")
    config = ReplicaConfig(enable_prefix_caching=True)
    bs = config.block_size
    prompt = 64 * bs
    hashes = chain_hashes(list(range(prompt)), bs)
    snapshot = Snapshot(config, 0.0, [], [], free_cached=[(0, h) for h in reversed(hashes)])
    request = RoutingRequest(prompt, 1, prefix_hashes=hashes, prefix_block_size=bs)
    fc = Forecaster(snapshot, profile)
    f = fc.forecast(request, 0.0)
    uncached = fc.forecast(replace(request, prefix_hashes=()), 0.0)
    assert f.e2e_s < uncached.e2e_s / 2  # the hit matters
    assert fc.floor.e2e_s(request, 0.0) <= f.e2e_s < fc.floor.e2e_s(replace(request, prefix_hashes=()), 0.0)


def test_floor_lets_a_request_preempted_mid_prefill_find_another_prompt_cached() -> None:
    """A running request half way through its prefill is preempted (the cache is full), and when it is
    admitted again it finds the blocks of another prompt with the same start cached (that one has
    finished): it computes only the rest, and the candidate behind it is done sooner than if it had
    computed all it was missing. The floor charged that prefill in full and went over the forecast."""
    config = ReplicaConfig(
        max_num_seqs=3, max_num_batched_tokens=8, block_size=1, num_gpu_blocks=60, max_model_len=384
    )
    shared = list(range(10))
    first = RequestState("first", 0.0, 59, 55, 0, None, chain_hashes(shared + list(range(10, 59)), 1))
    one = RequestState("one", 0.0, 1, 0, 0, None, chain_hashes([100], 1))
    half = RequestState("half", 0.0, 12, 1, 0, None, chain_hashes(shared + [200, 201], 1))
    snapshot = Snapshot(config, 0.0, [first, one, half], [], None, 0, "", [])
    request = RoutingRequest(1, 1, None, "c", chain_hashes([300], 1), 1)
    fc = Forecaster(snapshot, PROFILE)
    f = fc.forecast(request)
    assert f.steps == 2  # "half" preempted in the first step, admitted again with hits in the second
    assert fc.floor.e2e_s(request, 0.0) <= f.e2e_s
