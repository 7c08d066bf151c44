"""Per-decision forecasts and the filter stage: policies read forecasts from the decision's own
Candidates; trackers are never written by a decision; filters keep order."""

from __future__ import annotations

import time

from block.fleet.filters import InRotation, Untried, apply_filters
from block.fleet.forecasts import Forecasts
from block.fleet.tracker import InstanceTracker
from block.policies import Candidates, make_policy
from block.replica import Replica, ReplicaConfig, Request
from block.request import RoutingRequest
from block.sim.simulator import Cluster
from tests.conftest import make_test_profile
from tests.sim.helpers import small_config, small_workload

PROFILE = make_test_profile()
CFG = ReplicaConfig(max_num_seqs=8, max_num_batched_tokens=64, block_size=16, num_gpu_blocks=64)
REQ = RoutingRequest(40, 20)


def trackers(n: int = 3) -> list[InstanceTracker]:
    out = []
    for i in range(n):
        replica = Replica(CFG, PROFILE)
        for j in range(i):  # different loads, so forecasts differ
            replica.add(Request(f"r{j}", 30, 30, expected_output_tokens=30))
        replica.step()
        t = InstanceTracker(f"i{i}", PROFILE, CFG)
        t.observe(replica.snapshot(), 0.0)
        out.append(t)
    return out


def test_two_decisions_over_the_same_views_keep_their_own_forecasts() -> None:
    views = trackers()
    policy = make_policy("block")
    made = Forecasts(policy).in_process(REQ, views, 0.0)
    assert all(f is not None for f in made)
    best = min(range(3), key=lambda i: made[i].e2e_s)  # type: ignore[union-attr]
    other = [None if i == best else f for i, f in enumerate(made)]
    now = policy.choose(REQ, Candidates(views, made), 0.0)
    assert now.instance is views[best] and not now.fallback
    # another decision, interleaved, with a forecast missing: it falls back, the first is unaffected
    later = policy.choose(REQ, Candidates(views, other), 0.0)
    assert later.fallback
    assert Candidates(views, made).forecast_for(views[best]) is made[best]
    assert all("forecast" not in vars(v) for v in views)  # nothing per-decision left on the trackers


def test_the_deadline_leaves_the_rest_unknown() -> None:
    views = trackers()
    fan = Forecasts(make_policy("block"), deadline_s=0.0)
    assert fan.in_process(REQ, views, 0.0, started=time.perf_counter() - 1.0) == [None, None, None]


def test_filters_keep_the_order_and_drop_what_they_must() -> None:
    views = trackers(4)
    active = {"i0", "i2", "i3"}
    kept = apply_filters([InRotation(lambda: active), Untried({"i3"})], views)
    assert [v.id for v in kept] == ["i0", "i2"]
    assert apply_filters([Untried(set())], views) is views  # nothing tried: nothing copied


def test_the_simulator_filters_in_front_of_the_policy() -> None:
    cluster = Cluster(small_config(policy="least-requests", instances=3))
    cluster.filters.append(InRotation(lambda: {"sim-1"}))
    outcome = cluster.run(small_workload(60, qps=10), None)
    assert {r.instance for r in outcome.records} == {"sim-1"}
