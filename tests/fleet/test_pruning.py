"""Pruning by floors chooses what forecasting every instance chooses, live and in the simulator."""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from block.fleet.forecasts import READY_ORDER_MIN, Forecasts
from block.fleet.tracker import InstanceTracker
from block.policies import Candidates, make_policy
from block.predictor.bench import busy_snapshot
from block.prefix import chain_hashes
from block.profiles import load_profile
from block.request import RoutingRequest
from block.sim import simulate
from block.sim.simulator import Cluster
from tests.predictor.strategies import PROFILE, odd_snapshots, prompt_hashes, reached_snapshots
from tests.sim.helpers import signature, small_config, small_workload

requests = st.builds(
    RoutingRequest,
    prompt_tokens=st.integers(1, 300),
    expected_output_tokens=st.integers(1, 200),
    id=st.just("candidate"),
)
fleets = st.lists(
    st.tuples(st.one_of(reached_snapshots(), odd_snapshots()), st.lists(st.integers(1, 120), max_size=3)),
    min_size=2,
    max_size=8,
)


def trackers_for(fleet, profile=PROFILE, config=None) -> list[InstanceTracker]:
    out = []
    for i, (snap, pending) in enumerate(fleet):
        cfg = config or snap.config
        cap = min(cfg.max_model_len, cfg.num_gpu_blocks * cfg.block_size) - 1
        t = InstanceTracker(f"i{i}", profile, cfg, added_delay="none")
        t.observe(snap, 0.0)
        for j, prompt in enumerate(pending):  # routed since the snapshot (and fitting, as engines admit)
            t.on_routed(RoutingRequest(min(prompt, cap), 30, None, f"p{i}-{j}"), 0.001 * (j + 1))
        out.append(t)
    return out


def both(request, trackers, now):
    policy = make_policy("block")
    pruned = Forecasts(policy).candidates(request, trackers, now)
    every = Candidates(trackers, Forecasts(policy, prune=False).in_process(request, trackers, now))
    return policy.choose(request, pruned, now), policy.choose(request, every, now), pruned


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets, requests, st.floats(0.0, 0.3))
def test_same_choice_as_forecasting_every_instance(fleet, request, now) -> None:
    """(A forecast that fails on an instance whose floor cannot win is not made: the decision then
    needs no fallback, where forecasting every instance falls back. States engines never reach, such
    as a pending request bigger than the cache, are left out here for that reason.)"""
    # one configuration for the fleet, so that the request fits everywhere or nowhere alike
    config = fleet[0][0].config
    fleet = [(s, p) for s, p in fleet if s.config == config] or fleet[:1]
    cap = min(config.max_model_len, config.num_gpu_blocks * config.block_size) - 1
    request = RoutingRequest(min(request.prompt_tokens, cap), request.expected_output_tokens, None, "c")
    trackers = trackers_for(fleet, config=config)
    got, want, _ = both(request, trackers, now)
    assert got.instance is want.instance and got.fallback == want.fallback


def test_idle_instances_share_one_forecast() -> None:
    profile = load_profile("llama-2-7b-a30")
    idle = busy_snapshot(profile, 0, 0)
    fleet = [(busy_snapshot(profile, 48, 40, seed=1), [])] + [(idle, [])] * 5
    trackers = trackers_for(fleet, profile)
    forecasts = Forecasts(make_policy("block"))
    request = RoutingRequest(300, 100, None, "r")
    candidates = forecasts.candidates(request, trackers, 0.01)
    assert forecasts.made == 1 and [v.id for v in candidates] == ["i1", "i2", "i3", "i4", "i5"]
    assert candidates.forecasts is not None and len({id(f) for f in candidates.forecasts}) == 1
    assert make_policy("block").choose(request, candidates, 0.01).instance is trackers[1]


def test_busy_fleet_prunes_and_keeps_the_choice() -> None:
    """Paper-like busy instances with queues of different depths: most need no forecast."""
    profile = load_profile("llama-2-7b-a30")
    rng = random.Random(3)
    fleet = [(busy_snapshot(profile, 48, rng.randint(0, 64), seed=i), []) for i in range(24)]
    trackers = trackers_for(fleet, profile)
    for k in range(5):
        request = RoutingRequest(rng.randint(50, 900), rng.randint(20, 400), None, f"r{k}")
        got, want, pruned = both(request, trackers, 0.01)
        assert got.instance is want.instance and not got.fallback
        assert len(pruned) < len(trackers)


def test_simulator_results_identical_with_and_without_pruning() -> None:
    config = small_config(policy="block", instances=6)
    workload = small_workload(300, qps=22)
    plain = Cluster(config)
    plain.forecasts.prune = False
    unpruned = plain.run(workload, None)
    pruned = simulate(config, workload)
    assert signature(pruned) == signature(unpruned)
    assert pruned.stats["forecasts"] < unpruned.stats["forecasts"]
    # the targets not forecast: pruned, or idle like one already forecast
    assert pruned.stats["pruned"] <= unpruned.stats["forecasts"] - pruned.stats["forecasts"]


@st.composite
def cached_fleets(draw):
    """Caching instances whose prompts share prefixes; pending requests and a candidate that share them."""
    snaps = draw(
        st.lists(
            st.one_of(reached_snapshots(caching=True), odd_snapshots(caching=True)), min_size=2, max_size=8
        )
    )
    config = snaps[0].config
    snaps = [s for s in snaps if s.config == config]
    cap = min(config.max_model_len, config.num_gpu_blocks * config.block_size) - 1
    bs = config.block_size
    trackers = []
    for i, snap in enumerate(snaps):
        t = InstanceTracker(f"i{i}", PROFILE, config, added_delay="none")
        t.observe(snap, 0.0)
        for j, p in enumerate(draw(st.lists(st.integers(1, 120), max_size=3))):
            p = min(p, cap)
            hashes = draw(prompt_hashes(p, bs))
            t.on_routed(RoutingRequest(p, 30, None, f"p{i}-{j}", hashes, bs), 0.001 * (j + 1))
        trackers.append(t)
    prompt = min(draw(st.integers(1, 300)), cap)
    hashes = draw(prompt_hashes(prompt, bs))
    request = RoutingRequest(prompt, draw(st.integers(1, 200)), None, "c", hashes, bs)
    return trackers, request


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cached_fleets(), st.floats(0.0, 0.3))
def test_same_choice_with_prefix_caching(fleet, now) -> None:
    """With prefix-cache hits modelled, the floors (which charge only what cannot be found cached)
    prune and the choice stays the one forecasting every instance makes."""
    trackers, request = fleet
    got, want, _ = both(request, trackers, now)
    assert got.instance is want.instance and got.fallback == want.fallback


def test_simulator_identical_with_pruning_and_prefix_caching() -> None:
    """Shared system prompts, caching on: pruned and unpruned runs give the same records."""
    base = small_workload(300, qps=22)
    hashes = [
        chain_hashes([i % 3] * 256 + [10_000 + i] * p) for i, p in enumerate(base.prompt_tokens.tolist())
    ]
    workload = replace(base, prompt_tokens=base.prompt_tokens + 256, prefix_hashes=hashes)
    config = small_config(policy="block", instances=6, prefix_caching=True)
    plain = Cluster(config)
    plain.forecasts.prune = False
    unpruned = plain.run(workload, None)
    pruned = simulate(config, workload)
    assert signature(pruned) == signature(unpruned)
    assert sum(pruned.stats["prefix_cache_hits"]) > 0
    assert pruned.stats["forecasts"] < unpruned.stats["forecasts"]


def test_simulator_identical_in_ready_order_with_prefix_caching() -> None:
    """From READY_ORDER_MIN instances on, the fleet is walked in its ready order, now with caching on."""
    base = small_workload(200, qps=60)
    prompts = base.prompt_tokens.tolist()
    hashes = [chain_hashes([i % 3] * 256 + [10_000 + i] * p) for i, p in enumerate(prompts)]
    workload = replace(base, prompt_tokens=base.prompt_tokens + 256, prefix_hashes=hashes)
    config = small_config(policy="block", instances=READY_ORDER_MIN + 4, prefix_caching=True)
    plain = Cluster(config)
    plain.forecasts.prune = False
    unpruned = plain.run(workload, None)
    pruned = simulate(config, workload)
    assert signature(pruned) == signature(unpruned)
    assert pruned.stats["forecasts"] < unpruned.stats["forecasts"] / 2


def test_idle_instances_with_different_caches_are_forecast_apart() -> None:
    """Two idle instances, one holding part of the request's prompt cached: the pruned choice is the one
    forecasting every instance makes (an idle forecast stands for another only where no cache is modelled)."""
    profile = load_profile("llama-2-7b-a30")
    idle = busy_snapshot(profile, 0, 0)
    idle = replace(idle, config=replace(idle.config, enable_prefix_caching=True), free_cached=[(3, 7)])
    bs = idle.config.block_size
    hashes = chain_hashes(list(range(64 * bs)), bs)
    cached = replace(idle, free_cached=[(0, hashes[0])])  # its first block
    busy = busy_snapshot(profile, 48, 40, seed=1)
    trackers = trackers_for([(idle, []), (cached, []), (busy, [])], profile)
    request = RoutingRequest(64 * bs, 200, None, "r", hashes, bs)
    policy = make_policy("block", affinity_tolerance=0.0)  # the forecasts alone decide
    pruned = Forecasts(policy).candidates(request, trackers, 0.01)
    every = Candidates(trackers, Forecasts(policy, prune=False).in_process(request, trackers, 0.01))
    assert policy.choose(request, pruned, 0.01).instance is policy.choose(request, every, 0.01).instance
    assert policy.choose(request, every, 0.01).instance is trackers[1]
