"""Against the real engine emulator and the real predictor tracker: the block policy forecasts every
instance in process (no fallback), the engines receive the planned length, forecast error is observed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import httpx
import pytest

from tests.router.servers import router

engine_server = pytest.importorskip("block.engine.server")
pytest.importorskip("block.fleet.tracker")


@contextlib.contextmanager
def engines(n: int) -> Iterator[list[str]]:
    from block.engine.settings import EngineSettings, replica_config
    from block.profiles import load_profile

    profile = load_profile("tiny-fast")
    started = []
    try:
        for i in range(n):
            settings = EngineSettings(profile, replica_config(profile), noise=0.0, seed=i)
            started.append(engine_server.BackgroundEngine(settings).start())
        yield [e.url for e in started]
    finally:
        for e in started:
            e.stop()


async def test_block_policy_forecasts_real_engines() -> None:
    with engines(3) as urls:
        # A generous deadline: this checks the forecast wiring, not its speed (a loaded CI box
        # must not turn it into a fallback test).
        async with router(urls, policy="block", deadline_ms=500) as (app, url):
            from block.fleet.tracker import InstanceTracker

            assert all(isinstance(i.tracker, InstanceTracker) for i in app.pool.instances.values())
            async with httpx.AsyncClient(timeout=10) as c:

                async def one(i: int) -> httpx.Response:
                    body = {
                        "model": "synthetic",
                        "prompt": "hello " * (10 + i),
                        "max_tokens": 8,
                        "ignore_eos": True,
                        "stream": i % 2 == 0,
                    }
                    return await c.post(url + "/v1/completions", json=body)

                responses = await asyncio.gather(*(one(i) for i in range(24)))
                assert [r.status_code for r in responses] == [200] * 24
                listing = (await c.get(url + "/instances")).json()["instances"]
            assert sum(app.metrics.fallback_counts.values()) == 0
            assert all(
                row["last_forecast"] is not None and row["state_source"] == "/state" for row in listing
            )
            assert len({r.headers["x-block-instance"] for r in responses}) >= 2  # load spread by forecasts
            errors = app.metrics.forecast_error.collect()[0].samples
            assert sum(s.value for s in errors if s.name.endswith("_sum")) > 0
            await asyncio.sleep(0.05)
            assert all(i.tracker.in_flight == 0 for i in app.pool.instances.values())
