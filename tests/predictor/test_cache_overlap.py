"""A forecast that skips the prefix-cache model where nothing can hit equals the one that models it."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from block.policies.base import RoutingRequest
from block.predictor.cache_overlap import CacheOverlap
from block.predictor.forecast import Forecaster
from block.predictor.stepwise import run_stepwise
from block.replica import ReplicaConfig, RequestState, Snapshot
from tests.predictor.strategies import (
    PROFILE,
    hashed_pending,
    hashed_requests,
    odd_snapshots,
    reached_snapshots,
)

US = 1e-6
elapsed = st.one_of(st.just(0.0), st.floats(1e-4, 0.5))


@st.composite
def own_prompt_cases(draw, snapshots, share_candidate: bool = False):
    """A snapshot whose prompts share nothing (cached ones included), pending requests and a candidate
    of their own too (`share_candidate`: the candidate may share one of three families with them)."""
    snapshot = draw(snapshots)
    request = draw(hashed_requests(snapshot.config, share=share_candidate))
    shapes = draw(st.lists(st.tuples(st.integers(1, 120), st.integers(1, 80)), max_size=4))
    pending = draw(hashed_pending(snapshot, shapes, share=False))
    return snapshot, request, pending


def with_cache_model(snapshot, pending) -> Forecaster:
    """A forecaster that always models the cache (the reference the shortcut must equal)."""
    f = Forecaster(snapshot, PROFILE, pending=pending)
    f._cannot_hit = lambda candidate: False  # type: ignore[method-assign]
    return f


own_prompts = st.one_of(
    own_prompt_cases(reached_snapshots(caching=True, share=False)),
    own_prompt_cases(odd_snapshots(caching=True, share=False)),
    own_prompt_cases(reached_snapshots(caching=True, share=False), share_candidate=True),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(own_prompts, elapsed)
def test_forecast_without_cache_model_equals_with_it(case, elapsed_s) -> None:
    snapshot, request, pending = case
    fast = Forecaster(snapshot, PROFILE, pending=pending).forecast(request, elapsed_s)
    modelled = with_cache_model(snapshot, pending).forecast(request, elapsed_s)
    assert fast == modelled  # bit for bit: the same decisions follow
    ref = run_stepwise(snapshot, request, PROFILE, pending=pending, elapsed_s=elapsed_s)
    c, arrival = ref.candidate, snapshot.now + ref.arrival
    assert abs(fast.e2e_s - (c.finish_time - arrival)) < US
    assert abs(fast.ttft_s - (c.first_token_time - arrival)) < US
    assert fast.preemptions == c.num_preemptions


def test_preempted_request_finds_its_own_blocks() -> None:
    """A run that preempts falls back to the cache model: the preempted request finds its own blocks
    (freed into the cache) when it comes back, so it recomputes less than without the model."""
    cfg = ReplicaConfig(
        max_num_seqs=4, max_num_batched_tokens=64, block_size=4, num_gpu_blocks=20, max_model_len=384
    )
    # two long-decoding requests whose growth overflows 20 blocks: the newer one is preempted
    running = [
        RequestState(f"r{i}", 0.0, 32, 32, 1, 40, tuple(range(100 * (i + 1), 100 * (i + 1) + 8)))
        for i in range(2)
    ]
    snapshot = Snapshot(cfg, 0.0, running, [], free_cached=[])
    request = RoutingRequest(8, 4, prefix_hashes=(7, 8), prefix_block_size=4)
    fast = Forecaster(snapshot, PROFILE).forecast(request)
    assert fast == with_cache_model(snapshot, []).forecast(request)
    ref = run_stepwise(snapshot, request, PROFILE)
    assert abs(fast.e2e_s - (ref.candidate.finish_time - ref.arrival)) < US
    uncached = Snapshot(replace(cfg, enable_prefix_caching=False), 0.0, running, [])
    plain = Forecaster(uncached, PROFILE).forecast(request)
    assert fast.preemptions == plain.preemptions == 1
    assert fast.e2e_s < plain.e2e_s  # the hit after the preemption mattered here


def test_overlap_sees_shared_and_cached_blocks() -> None:
    assert CacheOverlap([(1, 2), (3, 4)], {9}).cannot_hit((5, 6))
    assert not CacheOverlap([(1, 2), (3, 4)], {9}).cannot_hit((5, 9))  # cached free
    assert not CacheOverlap([(1, 2), (3, 4)], set()).cannot_hit((3, 6))  # a queued prompt's block
    assert not CacheOverlap([(1, 2), (1, 4)], set()).cannot_hit((5,))  # shared in the state
    assert not CacheOverlap([(1, 2)], {2}).cannot_hit((5,))  # a prompt's block is cached free
