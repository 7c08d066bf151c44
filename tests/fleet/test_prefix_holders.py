"""The fleet's record of where prompts' first blocks went narrows a decision's walk, same choice."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from block.fleet.forecasts import READY_ORDER_MIN, Forecasts
from block.fleet.prefix_holders import PrefixHolders
from block.fleet.tracker import InstanceTracker
from block.policies import Candidates, make_policy
from block.prefix import chain_hashes
from block.replica import Snapshot
from block.request import RoutingRequest
from block.sim.simulator import Cluster
from tests.predictor.strategies import PROFILE, odd_snapshots, prompt_hashes, reached_snapshots
from tests.sim.helpers import signature, small_config, small_workload


def test_records_and_forgets() -> None:
    holders = PrefixHolders()
    holders.record(7, "a")
    holders.record(7, "b")
    holders.record(8, "a")
    assert holders.may_hold(7) == {"a", "b"} and holders.may_hold(9) == frozenset()
    holders.forget(7, "a")
    holders.forget(7, "b")
    assert holders.may_hold(7) == frozenset() and len(holders) == 1


@st.composite
def big_cached_fleets(draw):
    """READY_ORDER_MIN + 2 caching instances (the walk's order applies), their states drawn from a few
    snapshots whose prompts share prefixes and an idle one; every first block they name recorded where
    it is, as routing would have (free cached blocks by every hash: where it came first is not known)."""
    snaps = draw(
        st.lists(
            st.one_of(reached_snapshots(caching=True), odd_snapshots(caching=True)), min_size=2, max_size=5
        )
    )
    config = snaps[0].config
    snaps = [s for s in snaps if s.config == config]
    snaps.append(Snapshot(config, 0.0, free_cached=[]))  # idle, nothing cached: one forecast for all alike
    cap = min(config.max_model_len, config.num_gpu_blocks * config.block_size) - 1
    bs = config.block_size
    holders = PrefixHolders()
    trackers = []
    for i in range(READY_ORDER_MIN + 2):
        snap = snaps[draw(st.integers(0, len(snaps) - 1))]
        t = InstanceTracker(f"i{i}", PROFILE, config, added_delay="none", holders=holders)
        t.observe(snap, 0.0)
        for s in (*snap.running, *snap.waiting):
            if s.prefix_hashes:
                holders.record(s.prefix_hashes[0], t.id)
        for _, h in snap.free_cached or ():
            holders.record(h, t.id)
        for j, p in enumerate(draw(st.lists(st.integers(1, 120), max_size=2))):
            p = min(p, cap)
            t.on_routed(RoutingRequest(p, 30, None, f"p{i}-{j}", draw(prompt_hashes(p, bs)), bs), 0.001)
        trackers.append(t)
    prompt = min(draw(st.integers(1, 300)), cap)
    request = RoutingRequest(
        prompt, draw(st.integers(1, 200)), None, "c", draw(prompt_hashes(prompt, bs)), bs
    )
    return trackers, holders, request


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(big_cached_fleets(), st.floats(0.0, 0.3))
def test_same_choice_as_forecasting_every_instance(fleet, now) -> None:
    trackers, holders, request = fleet
    policy = make_policy("block")
    every = Candidates(trackers, Forecasts(policy, prune=False).in_process(request, trackers, now))
    walked = Forecasts(policy, holders=holders).candidates(request, trackers, now)
    got, want = policy.choose(request, walked, now), policy.choose(request, every, now)
    assert got.instance is want.instance and got.fallback == want.fallback


def test_simulator_identical_with_holders_and_fewer_forecasts() -> None:
    """ShareGPT-like prompts (most their own, some sharing a system prompt) on READY_ORDER_MIN + 4
    instances: with the record the walk reaches fewer instances, and the runs are identical to forecasting
    every instance."""
    base = small_workload(200, qps=60)
    prompts = base.prompt_tokens.tolist()
    hashes = [
        chain_hashes(([i % 3] * 256 if i % 4 == 0 else []) + [10_000 + i] * p) for i, p in enumerate(prompts)
    ]
    workload = replace(base, prompt_tokens=base.prompt_tokens + 256, prefix_hashes=hashes)
    config = small_config(policy="block", instances=READY_ORDER_MIN + 4, prefix_caching=True)
    unpruned = Cluster(config)
    unpruned.forecasts.prune = False
    every = unpruned.run(workload, None)
    blind = Cluster(config)
    blind.forecasts.holders = None  # a walk that does not know where prefixes are
    without = blind.run(workload, None)
    knowing = Cluster(config)
    with_holders = knowing.run(workload, None)
    assert signature(with_holders) == signature(every) == signature(without)
    assert knowing.forecasts.walked < blind.forecasts.walked
