"""A router with the block policy in front of two real engine emulators, after a few requests (streamed and
not): what an operator's Prometheus would scrape. Shared by the metrics and dashboard tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx

from block.engine.server import BackgroundEngine
from block.engine.settings import EngineSettings, replica_config
from block.profiles import load_profile
from block.router.app import RouterApp
from tests.router.servers import router


@contextlib.asynccontextmanager
async def router_after_traffic(requests: int = 8) -> AsyncIterator[tuple[RouterApp, str, list[str]]]:
    """Yield (router app, router URL, engine URLs) once `requests` requests have completed."""
    profile = load_profile("tiny-fast")
    engines: list[BackgroundEngine] = []
    try:
        for i in range(2):
            settings = EngineSettings(profile, replica_config(profile), noise=0.0, seed=i)
            engines.append(BackgroundEngine(settings).start())
        urls = [e.url for e in engines]
        # A generous deadline: forecasts must not be shed on a loaded machine (this is not a speed test).
        async with router(urls, policy="block", deadline_ms=500) as (app, url):
            async with httpx.AsyncClient(timeout=30) as c:

                async def one(i: int) -> None:
                    body = {
                        "prompt": "hello " * (5 + i),
                        "max_tokens": 6,
                        "ignore_eos": True,
                        "stream": i % 2 == 0,
                    }
                    r = await c.post(url + "/v1/completions", json=body)
                    assert r.status_code == 200, r.text

                await asyncio.gather(*(one(i) for i in range(requests)))
            yield app, url, urls
    finally:
        for e in engines:
            e.stop()


async def scrape(url: str) -> str:
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.get(url + "/metrics")
        assert r.status_code == 200
        return r.text
