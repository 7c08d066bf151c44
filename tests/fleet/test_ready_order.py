"""The cheapest floor (InstanceTracker.ready_at + StepFloor.own_s) bounds every forecast, loose or from
the checkpoint; a fleet walked in that order (block/fleet/ready_order.py) chooses what forecasting every
instance chooses, decision after decision."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from block.fleet.forecasts import READY_ORDER_MIN, Forecasts
from block.fleet.ready_order import STEP_BUCKETS
from block.fleet.tracker import InstanceTracker
from block.policies import Candidates, make_policy
from block.predictor.bench import busy_snapshot
from block.predictor.floor import MARGIN
from block.profiles import load_profile
from block.replica import Replica, ReplicaConfig, Request
from block.request import RoutingRequest
from tests.fleet.test_pruning import trackers_for
from tests.predictor.strategies import odd_snapshots, reached_snapshots

requests = st.builds(
    RoutingRequest,
    prompt_tokens=st.integers(1, 300),
    expected_output_tokens=st.integers(1, 200),
    id=st.just("candidate"),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(reached_snapshots(), odd_snapshots()),
    st.lists(st.integers(1, 120), max_size=3),
    requests,
    st.floats(0.0, 0.3),
    st.booleans(),
)
def test_ready_at_bounds_every_forecast(snapshot, pending, request, now, prepared) -> None:
    (tracker,) = trackers_for([(snapshot, pending)])
    cfg = tracker.config
    cap = min(cfg.max_model_len, cfg.num_gpu_blocks * cfg.block_size) - 1
    request = RoutingRequest(min(request.prompt_tokens, cap), request.expected_output_tokens, None, "c")
    now = max(now, 0.001 * len(pending))  # decisions come after the routes
    if prepared:
        tracker.prepare()
    got = tracker.ready_at(now, STEP_BUCKETS)
    forecast = tracker.predict(request, now)
    if got is None or forecast is None:
        return
    ready, _ = got
    steps, config = tracker.own_floor()  # type: ignore[misc]
    own, n = steps.own_s(request, config), steps.own_steps(request, config)
    for bucket, at in zip(STEP_BUCKETS, ready, strict=True):
        if bucket <= n:
            lower = at - now + own
            assert lower - abs(lower) * MARGIN <= forecast.e2e_s, (bucket, lower, forecast.e2e_s)


def _fleet(n: int, seed: int) -> list[InstanceTracker]:
    profile = load_profile("llama-2-7b-a30")
    rng = random.Random(seed)
    trackers = []
    for i in range(n):
        running = rng.choice([0, 8, 30, 48])
        snap = busy_snapshot(profile, running, rng.randint(0, 48) if running else 0, seed=seed * 1000 + i)
        t = InstanceTracker(f"i{i}", profile, snap.config, added_delay="none")
        t.observe(snap, 0.0)
        for j in range(rng.randint(0, 2)):  # routed since the snapshot
            t.on_routed(
                RoutingRequest(rng.randint(20, 600), rng.randint(5, 300), None, f"p{i}-{j}"), 0.001 * j
            )
        trackers.append(t)
    return trackers


def test_fleet_walked_in_ready_order_keeps_the_choice() -> None:
    n = READY_ORDER_MIN + 8
    walked, every = _fleet(n, 7), _fleet(n, 7)
    policy = make_policy("block")
    pruned, exhaustive = Forecasts(policy), Forecasts(policy, prune=False)
    rng = random.Random(11)
    now = 0.01
    for k in range(12):
        request = RoutingRequest(rng.randint(4, 1500), rng.randint(2, 600), None, f"d{k}")
        got = policy.choose(request, pruned.candidates(request, walked, now), now)
        want = policy.choose(request, Candidates(every, exhaustive.in_process(request, every, now)), now)
        i = walked.index(got.instance)  # type: ignore[arg-type]
        assert i == every.index(want.instance) and not got.fallback  # type: ignore[arg-type]
        walked[i].on_routed(request, now)  # both fleets route it to the choice: they stay alike
        every[i].on_routed(request, now)
        if k % 2:  # as the router does once the request is on its way; else the next decision does it
            pruned.settle(walked, now)
            assert not pruned._ready.stale
        now += 0.003
    assert pruned.made < exhaustive.made / 3


def test_idle_instances_are_forecast_once_per_kind_with_the_same_choice() -> None:
    """A lightly loaded fleet: most instances idle, their snapshots taken at different times. One forecast
    stands for every idle instance alike (the same, bit for bit, whenever sent), and the choice is the
    one forecasting every instance makes, ties included (fewest in flight, then first)."""
    profile = load_profile("tiny-fast")
    config = ReplicaConfig(max_num_seqs=256, max_num_batched_tokens=2048, block_size=16, num_gpu_blocks=8192)
    policy = make_policy("block")
    pruned, exhaustive = Forecasts(policy), Forecasts(policy, prune=False)
    n = READY_ORDER_MIN + 8
    walked = [InstanceTracker(f"i{i}", profile, config, added_delay="none") for i in range(n)]
    every = [InstanceTracker(f"i{i}", profile, config, added_delay="none") for i in range(n)]
    rng = random.Random(3)
    replicas = [Replica(config, profile) for _ in range(n)]
    for fleet in (walked, every):
        for t, replica in zip(fleet, replicas, strict=True):
            t.observe(replica.snapshot(), 0.0)
    now = 0.0
    for k in range(30):
        now += 0.002
        for i in rng.sample(range(n), 4):  # polled: the engine has finished what it had
            while replicas[i].has_work:
                replicas[i].step()
            at = now - rng.uniform(0, 0.002)
            for fleet in (walked, every):
                fleet[i].observe(replicas[i].snapshot(), at)
        request = RoutingRequest(rng.randint(2, 40), rng.randint(1, 8), None, f"d{k}")
        made = pruned.made
        got = policy.choose(request, pruned.candidates(request, walked, now), now)
        want = policy.choose(request, Candidates(every, exhaustive.in_process(request, every, now)), now)
        i = walked.index(got.instance)  # type: ignore[arg-type]
        assert i == every.index(want.instance) and not got.fallback  # type: ignore[arg-type]
        assert pruned.made - made <= n // 2
        for fleet in (walked, every):
            fleet[i].on_routed(request, now)
        replicas[i].add(Request(request.id, request.prompt_tokens, request.expected_output_tokens))
        pruned.settle(walked, now)
    assert pruned.made < exhaustive.made / 5


def test_an_instance_done_before_the_request_gets_there_forecasts_as_an_idle_one() -> None:
    """Everything routed there finishes (in its forecast) before the request arrives: the forecast is an
    idle instance's, bit for bit, so a decision takes it from one forecast of that kind."""
    profile = load_profile("tiny-fast")
    config = ReplicaConfig(max_num_seqs=256, max_num_batched_tokens=2048, block_size=16, num_gpu_blocks=8192)
    idle, busy = (InstanceTracker(k, profile, config, added_delay="none") for k in ("idle", "busy"))
    for t in (idle, busy):
        t.observe(Replica(config, profile).snapshot(), 0.0)
    busy.on_routed(RoutingRequest(30, 2, None, "earlier"), 0.0)
    request = RoutingRequest(20, 3, None, "c")
    assert busy.idle_by(request, 0.0) is None  # it is still there when this one arrives
    late = 1.0  # long after it finished
    assert busy.idle_by(request, late) == idle.idle_signature(late) is not None
    a, b = idle.predict(request, late), busy.predict(request, late)
    assert a is not None and b is not None
    assert (a.ttft_s, a.e2e_s, a.queue_delay_s) == (b.ttft_s, b.e2e_s, b.queue_delay_s)
