"""The fleet's state-read budget: past `state_reads_per_s`, each Block engine is read every N / budget
seconds instead of every refresh, and its tracker follows the router's own routes and finishes between
reads."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.router.servers import FakeUpstream, router, upstreams


class CountingBlock(FakeUpstream):
    """A Block engine fake that counts /state reads."""

    state_reads: int = 0

    def state(self) -> dict[str, Any]:
        self.state_reads += 1
        return super().state()


async def test_a_large_fleet_is_read_within_the_budget_and_tracked_between_reads() -> None:
    engines = [CountingBlock(tokens=20, token_delay=0.03) for _ in range(2)]
    # 2 instances at 4 reads/s: each read every 0.5 s (the 20 ms refresh alone: 25 times as often)
    async with (
        upstreams(*engines) as ups,
        router([u.url for u in ups], policy="block", refresh_ms=20, state_reads_per_s=4) as (app, url),
        httpx.AsyncClient(timeout=10) as c,
    ):
        listed = (await c.get(url + "/instances")).json()
        assert listed["state_read_period_ms"] == 500.0
        reads_before = [e.state_reads for e in engines]
        trackers = [i.tracker for i in app.pool.instances.values()]
        seen_waiting = False
        async with c.stream("POST", url + "/v1/completions", json={"prompt": "a b c", "stream": True}) as r:
            async for _ in r.aiter_lines():  # about 0.6 s: its engine is read at most twice meanwhile
                # the fake's /state never shows the request: only the router's own record counts it
                seen_waiting = seen_waiting or any(t is not None and t.waiting == 1 for t in trackers)
        assert seen_waiting
        assert all(t is not None and t.waiting == 0 and t.in_flight == 0 for t in trackers)  # it finished
        # ~0.6 s at one read per 0.5 s: 1-2 reads each (30 at the refresh period); a slow machine reads less
        reads = [e.state_reads - b for e, b in zip(engines, reads_before, strict=True)]
        assert all(n <= 4 for n in reads), reads
        for _ in range(300):  # bounded: every instance is still read, within a few seconds
            if all(e.state_reads - b >= 2 for e, b in zip(engines, reads_before, strict=True)):
                break
            await asyncio.sleep(0.01)
        assert all(e.state_reads - b >= 2 for e, b in zip(engines, reads_before, strict=True))


async def test_a_small_fleet_is_read_at_every_refresh() -> None:
    engine = CountingBlock()
    async with (
        upstreams(engine) as (up,),
        router([up.url], policy="block", refresh_ms=20) as (app, url),
        httpx.AsyncClient(timeout=10) as c,
    ):
        assert (await c.get(url + "/instances")).json()["state_read_period_ms"] == 20.0
        before = engine.state_reads
        for _ in range(500):  # bounded: ten reads take 0.2 s at the refresh period
            if engine.state_reads - before >= 10:
                break
            await asyncio.sleep(0.01)
        assert engine.state_reads - before >= 10
