"""The decision's bounds on in-process forecasts: the harm term only when weighed, the deadline, and the
budget that keeps a burst of forecasts from taking the whole event loop."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
import pytest

from block.engine.server import BackgroundEngine
from block.engine.settings import EngineSettings, replica_config
from block.fleet.forecasts import READY_ORDER_MIN, ForecastBudget
from block.fleet.tracker import InstanceTracker
from block.policies import RoutingRequest, make_policy
from block.profiles import load_profile
from block.replica import Replica, ReplicaConfig, Request
from block.router.decide import Decider
from block.router.instance import Instance
from block.router.metrics import RouterMetrics
from tests.conftest import make_test_profile
from tests.router.servers import router

PROFILE = make_test_profile()
CFG = ReplicaConfig(max_num_seqs=8, max_num_batched_tokens=64, block_size=16, num_gpu_blocks=64)
REQ = RoutingRequest(40, 20)


class Pool:
    def __init__(self, instances: list[Instance]) -> None:
        self.instances = {i.id: i for i in instances}
        self.routable_ids = frozenset(self.instances)


class CountingTracker(InstanceTracker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[dict[str, Any]] = []

    def predict(self, request: RoutingRequest, now: float, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        return super().predict(request, now, **kwargs)


def decider(harm_weight: float = 0.0, n: int = 3, deadline_s: float = 1.0) -> tuple[Decider, list[Any]]:
    instances, trackers = [], []
    for i in range(n):
        replica = Replica(CFG, PROFILE)
        for j in range(i):  # different loads, so forecasts differ
            replica.add(Request(f"r{j}", 30, 30, expected_output_tokens=30))
        replica.step()
        inst = Instance(f"http://10.0.0.{i}:8000", healthy=True)
        inst.tracker = CountingTracker(inst.id, PROFILE, CFG)
        inst.tracker.observe(replica.snapshot(), time.monotonic())
        instances.append(inst)
        trackers.append(inst.tracker)
    policy = make_policy("block", seed=0, harm_weight=harm_weight)
    return Decider(policy, Pool(instances), RouterMetrics("block"), deadline_s), trackers  # type: ignore[arg-type]


def test_budget_refills_at_its_share_up_to_the_reserve() -> None:
    b = ForecastBudget(share=0.5, reserve_s=0.1)
    t = b._at
    assert b.available(t)
    b.spend(0.3)  # one slow decision overdraws it
    assert not b.available(t + 0.1)  # +0.05 refilled: still -0.15
    assert not b.available(t + 0.39)
    assert b.available(t + 0.41)
    assert b.available(t + 100.0) and b.level == 0.1  # never more than the reserve


async def test_the_harm_term_is_only_computed_for_a_policy_that_weighs_it() -> None:
    for harm, mode in ((0.0, "none"), (0.5, "horizon")):
        d, trackers = decider(harm_weight=harm)
        decision = await d.decide(REQ)
        assert not decision.fallback and decision.forecast is not None
        called = [t for t in trackers if t.calls]  # (with no harm term, pruning may skip some)
        assert called and all(t.calls[-1]["added_delay"] == mode for t in called)
        if harm:  # the harm term has no floor: every instance is forecast
            assert len(called) == len(trackers)


async def test_decisions_go_without_forecasts_while_the_budget_is_spent() -> None:
    d, trackers = decider()
    d.budget.spend(d.budget.reserve_s + 10.0)  # as after a long burst of forecasts
    decision = await d.decide(REQ)
    assert decision.fallback and decision.forecast is None
    assert all(not t.calls for t in trackers)  # no forecast was even started
    d.budget.level = d.budget.reserve_s
    assert not (await d.decide(REQ)).fallback


async def test_a_forecast_past_the_deadline_is_missing_not_an_error() -> None:
    d, trackers = decider()
    assert trackers[1].predict(REQ, time.monotonic(), deadline=time.perf_counter() - 1.0) is None
    d.deadline_s = 0.0  # nothing fits: every forecast misses, the policy falls back
    decision = await d.decide(REQ)
    assert decision.fallback


async def test_an_over_length_prompt_logs_one_line_and_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """The prompt fits no instance (model length 4,096): an expected client error, which the engines
    answer with a 400; the router says so in one line per request, not a traceback per instance."""
    profile = load_profile("tiny-fast")
    engines = [
        BackgroundEngine(EngineSettings(profile, replica_config(profile), noise=0.0, seed=i)).start()
        for i in range(2)
    ]
    try:
        async with router([e.url for e in engines], policy="block", deadline_ms=500) as (_, url):
            caplog.set_level(logging.INFO, logger="block.router")
            async with httpx.AsyncClient(timeout=10) as c:
                r = await c.post(url + "/v1/completions", json={"prompt": "w " * 5000, "max_tokens": 2})
            assert r.status_code == 400 and "maximum context length" in r.json()["error"]["message"]
    finally:
        for e in engines:
            e.stop()
    decision_logs = [rec for rec in caplog.records if rec.name == "block.router.decision"]
    assert [rec.exc_info for rec in decision_logs] == [None]
    assert decision_logs[0].levelno == logging.INFO
    assert "5001 prompt tokens" in decision_logs[0].getMessage()  # 5,000 words and the begin-of-text token


async def test_the_routed_instance_is_prepared_again_off_the_decisions_path() -> None:
    """settle_soon: once the loop has run what was ready, the order the next decision walks is up to
    date with the routed instance's new state (the decision then only checks the versions)."""
    d, trackers = decider(n=READY_ORDER_MIN)
    decision = await d.decide(REQ)
    assert d.forecasts._ready.groups  # the decision walked the fleet in ready order
    decision.instance.tracker.on_routed(REQ, time.monotonic())  # type: ignore[union-attr]
    d.settle_soon()
    d.settle_soon()  # one pass for any number of changes
    ready = d.forecasts._ready
    assert ready._versions != [t.version for t in trackers]  # not yet: after what is ready now
    await asyncio.sleep(0)
    assert ready._versions == [t.version for t in trackers] and not ready.stale
