"""The router with auto-provisioning, end to end, on engines the local-emulator provider starts itself.

Engines use the synthetic `tiny-fast` profile (1-3 ms steps), so a request of n tokens takes about
n x 1.5 ms. Every wait is bounded; every engine is stopped by the router's shutdown (checked)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from block.router.app import RouterApp
from block.router.config import RouterConfig
from tests.router.servers import Served, count_words


@contextlib.asynccontextmanager
async def provisioned_router(**settings: Any) -> AsyncIterator[tuple[RouterApp, str]]:
    settings.setdefault("health_interval", 0.1)
    settings.setdefault("provision_interval_s", 0.05)
    config = RouterConfig.build(
        instances=[], provider="local-emulator", emulator_profile="tiny-fast", **settings
    )
    app = RouterApp(config, count_tokens=count_words)
    served = await Served(app).start()
    servers = app.autoscaler.provider.servers
    seen: list[Any] = []
    try:
        yield app, served.url
    finally:
        seen.extend(s.proc for s in servers.values())
        await served.stop()  # lifespan shutdown: the autoscaler stops its engines
        for proc in seen:
            assert proc.returncode is not None, "an engine outlived the router"
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                continue
            raise AssertionError(f"process group {proc.pid} still alive")


async def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def states(app: RouterApp) -> list[str]:
    return sorted(i.state for i in app.pool.instances.values())


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


async def stream(client: httpx.AsyncClient, url: str, tokens: int) -> tuple[int, int, str]:
    """Status, token events received, and the instance that served it."""
    body = {"prompt": "hello world", "max_tokens": tokens, "ignore_eos": True, "stream": True}
    events = 0
    async with client.stream("POST", url + "/v1/completions", json=body) as r:
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                events += 1
        return r.status_code, events, r.headers.get("x-block-instance", "")


async def test_scale_up_under_load_then_shutdown_stops_engines() -> None:
    async with provisioned_router(
        provision="preemptive",
        slo_e2e=0.25,
        min_instances=1,
        max_instances=2,
        cooldown_s=0.2,
        scale_down=False,
    ) as (app, url):
        await wait_for(lambda: states(app) == ["active"], 20, "the first engine (below min)")
        async with httpx.AsyncClient(timeout=30) as c:
            # 12 requests of 400 tokens at once: forecasts far beyond 0.25 s -> one more engine.
            results = await asyncio.gather(*(stream(c, url, 400) for _ in range(12)))
            assert all(status == 200 and events == 400 for status, events, _ in results)
            await wait_for(lambda: states(app) == ["active", "active"], 20, "the second engine")
            assert len(app.pool.instances) == 2  # never above max, however many forecasts missed
            listing = (await c.get(url + "/instances")).json()
            assert {i["state"] for i in listing["instances"]} == {"active"}
            assert listing["provision"]["mode"] == "preemptive"
            reasons = [d["reason"] for d in listing["provision"]["decisions"]]
            assert reasons[0] == "below_min" and "forecast_over_slo" in reasons
            text = (await c.get(url + "/metrics")).text
            assert (
                metric(
                    text,
                    "block_router_provision_decisions_total",
                    action="scale_up",
                    reason="forecast_over_slo",
                )
                >= 1
            )
            assert metric(text, "block_router_instances", state="active") == 2


async def test_scale_down_drains_without_losing_requests() -> None:
    async with provisioned_router(
        provision="reactive",
        slo_e2e=30.0,
        min_instances=2,
        max_instances=2,
        cooldown_s=0.0,
        scale_down_hold_s=1000.0,  # lowered below, once requests are in flight everywhere
    ) as (app, url):
        await wait_for(lambda: states(app) == ["active", "active"], 20, "two engines (below min)")
        async with httpx.AsyncClient(timeout=30) as c:
            # Long streams on both engines (about 2 s each), then allow one to retire.
            long = [asyncio.create_task(stream(c, url, 1500)) for _ in range(6)]
            await wait_for(
                lambda: all(i.tracker.in_flight > 0 for i in app.pool.instances.values()),
                5,
                "work everywhere",
            )
            ctl = app.autoscaler.controller
            ctl.settings = replace(ctl.settings, min_instances=1, scale_down_hold_s=0.1)
            await wait_for(lambda: "draining" in states(app), 5, "a draining instance")
            draining = next(i for i in app.pool.instances.values() if i.draining)
            assert draining.tracker.in_flight > 0  # it had work: that work must finish there
            listing = (await c.get(url + "/instances")).json()
            assert sorted(i["state"] for i in listing["instances"]) == ["active", "draining"]
            # New requests avoid the draining instance.
            status, events, served_by = await stream(c, url, 5)
            assert (status, events) == (200, 5) and served_by != draining.id
            results = await asyncio.gather(*long)
            assert all(status == 200 and events == 1500 for status, events, _ in results)
            await wait_for(lambda: len(app.pool.instances) == 1, 5, "the drained instance released")
            assert draining.id not in app.pool.instances
            servers = app.autoscaler.provider.servers
            await wait_for(lambda: draining.url not in servers, 10, "its engine stopped")
            text = (await c.get(url + "/metrics")).text
            assert (
                metric(
                    text,
                    "block_router_provision_decisions_total",
                    action="scale_down",
                    reason="forecasts_under_slo",
                )
                == 1
            )
            assert metric(text, "block_router_instances", state="draining") == 0
