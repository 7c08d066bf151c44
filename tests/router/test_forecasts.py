"""The block policy routes by forecasts (here from fake sidecar predictors) and falls back, counted,
when they are late or down; requests never fail because of a predictor."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from tests.router.servers import FakeUpstream, Served, _reply, lifespan, router, upstreams


@dataclass
class FakeSidecar:
    e2e_s: float
    delay_s: float = 0.0
    calls: list[str] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await lifespan(receive, send)
        while (await receive()).get("more_body"):
            pass
        self.calls.append(scope["path"])
        if scope["path"] == "/predict":
            await asyncio.sleep(self.delay_s)
            f = {
                "ttft_s": self.e2e_s / 10,
                "e2e_s": self.e2e_s,
                "queue_delay_s": 0.0,
                "added_delay_s": 0.0,
                "running": 0,
                "waiting": 0,
                "free_blocks": 64,
                "snapshot_age_ms": 1.0,
                "predict_ms": 0.1,
            }
            await _reply(send, 200, orjson.dumps(f))
        else:
            await _reply(send, 200, b"{}")


async def test_block_routes_to_the_fastest_forecast_then_falls_back() -> None:
    fakes = [FakeUpstream(tokens=2) for _ in range(3)]
    sidecars = [FakeSidecar(2.0), FakeSidecar(0.5), FakeSidecar(1.0)]
    served = [await Served(s).start() for s in sidecars]
    try:
        async with (
            upstreams(*fakes) as ups,
            router(
                [u.url for u in ups], policy="block", predictors=[s.url for s in served], deadline_ms=200
            ) as (app, url),
        ):
            best = ups[1].url.removeprefix("http://")
            async with httpx.AsyncClient(timeout=5) as c:
                for _ in range(5):
                    r = await c.post(url + "/v1/completions", json={"prompt": "a b", "max_tokens": 2})
                    assert r.status_code == 200 and r.headers["x-block-instance"] == best
                assert sum(app.metrics.fallback_counts.values()) == 0
                listing = (await c.get(url + "/instances")).json()["instances"]
                assert next(i for i in listing if i["id"] == best)["last_forecast"]["e2e_s"] == 0.5
                await asyncio.sleep(0.1)
                assert sidecars[1].calls.count("/routed") == 5 and sidecars[1].calls.count("/finished") == 5

                # One predictor is slow (misses the deadline), then one is down: fall back, count, serve.
                sidecars[0].delay_s = 1.0
                r = await c.post(url + "/v1/completions", json={"prompt": "a", "max_tokens": 1})
                assert r.status_code == 200
                assert sum(app.metrics.fallback_counts.values()) == 1
                sidecars[0].delay_s = 0.0
                await served[1].stop()
                for _ in range(3):
                    r = await c.post(url + "/v1/completions", json={"prompt": "a", "max_tokens": 1})
                    assert r.status_code == 200
                assert sum(app.metrics.fallback_counts.values()) == 4
                text = (await c.get(url + "/metrics")).text
                assert 'block_router_fallbacks_total{policy="block",reason="sidecar"} 4.0' in text
                listing = (await c.get(url + "/instances")).json()
                assert listing["fallbacks"]["sidecar"] == 4
                assert listing["no_forecast_share"] == round(4 / 9, 6)  # 4 of 9 decisions
    finally:
        for s in served:
            await s.stop()


async def test_block_without_forecasts_falls_back_to_least_requests() -> None:
    """No predictor available for these instances (no profile): every decision is a counted fallback."""
    fakes = [FakeUpstream(tokens=2) for _ in range(2)]
    async with upstreams(*fakes) as ups, router([u.url for u in ups], policy="block") as (app, url):
        async with httpx.AsyncClient(timeout=5) as c:
            for _ in range(4):
                assert (await c.post(url + "/v1/completions", json={"prompt": "a"})).status_code == 200
        assert sum(app.metrics.fallback_counts.values()) == 4
        assert app.metrics.fallback_counts["error"] == 4 and app.metrics.no_forecast_share() == 1.0


async def test_anticipated_arrivals_share_one_fleet_record() -> None:
    fakes = [FakeUpstream(), FakeUpstream(), FakeUpstream()]
    settings = {"policy": "block", "anticipate_arrivals": True, "profile": "tiny-fast"}
    async with upstreams(*fakes) as ups, router([u.url for u in ups], **settings) as (app, url):
        trackers = [i.tracker for i in app.pool.instances.values()]
        fleet = app.pool.fleet
        assert fleet is not None and fleet.instances == 3
        assert all(t.fleet is fleet and t.anticipate_arrivals for t in trackers)
        async with httpx.AsyncClient(timeout=5) as c:
            for _ in range(6):
                r = await c.post(url + "/v1/completions", json={"prompt": "a b c", "max_tokens": 4})
                assert r.status_code == 200
        assert fleet.count_since(0.0) == 6  # every route, whichever instance took it
        app.pool.set_healthy(next(iter(app.pool.instances.values())), False)
        assert fleet.instances == 2


async def test_alike_idle_instances_are_forecast_once_per_decision() -> None:
    """Instances that run the same profile share one loaded profile, so a decision over many idle ones
    makes one forecast for them all (Forecasts.candidates), not one per instance."""
    fakes = [FakeUpstream(tokens=1) for _ in range(34)]  # from READY_ORDER_MIN instances on
    async with (
        upstreams(*fakes) as ups,
        router([u.url for u in ups], policy="block", profile="tiny-fast", deadline_ms=1000) as (app, url),
    ):
        trackers = [inst.tracker for inst in app.pool.instances.values()]
        assert len(trackers) == 34 and len({id(t.profile) for t in trackers if t is not None}) == 1
        forecasts = app.decider.forecasts
        async with httpx.AsyncClient(timeout=5) as c:
            for _ in range(3):
                await every_idle(trackers)
                made = forecasts.made
                r = await c.post(url + "/v1/completions", json={"prompt": "a b c", "max_tokens": 1})
                assert r.status_code == 200
                assert forecasts.made - made == 1, (app.metrics.fallback_counts, forecasts.missing_reason)


async def every_idle(trackers: list[Any], timeout_s: float = 5.0) -> None:
    """Wait until every tracker sees its instance idle (the last request finished and polled)."""
    loop = asyncio.get_running_loop()
    until = loop.time() + timeout_s
    while not all(t.idle_signature(time.monotonic()) is not None for t in trackers):
        assert loop.time() < until, "instances still busy"
        await asyncio.sleep(0.02)
