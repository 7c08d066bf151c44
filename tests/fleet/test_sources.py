"""State sources: adding one is a class and its place in SOURCES; the first that recognises an
instance reads it, for its first snapshot and every refresh."""

from __future__ import annotations

import asyncio

import aiohttp
import httpx
import pytest

from block.fleet import sources
from block.fleet.sources import Reading, StateSource
from block.replica import ReplicaConfig, RequestState, Snapshot
from tests.router.servers import FakeUpstream, router, upstreams


class Constant(StateSource):
    """A made-up kind: recognises every instance, reads a fixed queue of two running requests."""

    name = "constant"
    reads = "(test)"
    reads_done = 0

    @classmethod
    async def detect(cls, session: aiohttp.ClientSession, url: str, timeout: float) -> bool | None:
        return True

    async def read(self, session: aiohttp.ClientSession, timeout: float) -> Reading:
        Constant.reads_done += 1
        running = [RequestState(f"x{i}", 0.0, 10, 10, 1, 5) for i in range(2)]
        return Reading(Snapshot(ReplicaConfig(num_gpu_blocks=50), 0.0, running, [], free_blocks=40))


async def test_a_registered_source_is_detected_and_feeds_the_tracker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "SOURCES", [Constant, *sources.SOURCES])
    async with upstreams(FakeUpstream()) as (up,), router([up.url], policy="llumnix") as (app, url):
        inst = next(iter(app.pool.instances.values()))
        assert inst.kind == "constant" and not inst.accepts_expected_field
        first = Constant.reads_done
        for _ in range(200):  # bounded: the poller reads it again within a few refreshes
            if Constant.reads_done > first:
                break
            await asyncio.sleep(0.01)
        assert Constant.reads_done > first
        assert inst.tracker is not None and inst.tracker.running == 2 and inst.tracker.free_blocks == 40
        async with httpx.AsyncClient(timeout=5) as c:
            listed = (await c.get(url + "/instances")).json()["instances"][0]
        assert listed["kind"] == "constant" and listed["state_source"] == "(test)"


async def test_block_engines_and_stock_vllm_are_told_apart() -> None:
    fakes = upstreams(FakeUpstream(), FakeUpstream(block=False))
    async with fakes as (block, vllm), aiohttp.ClientSession() as session:
        assert await sources.detect(session, block.url, 2.0) is sources.BlockState
        assert await sources.detect(session, vllm.url, 2.0) is sources.VllmMetrics
        assert await sources.detect(session, "http://127.0.0.1:9", 0.5) is None  # nothing there
