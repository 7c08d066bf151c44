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


class CountingVllm(FakeUpstream):
    """A stock vLLM fake that counts /metrics reads."""

    metrics_reads: int = 0

    def metrics(self) -> str:
        self.metrics_reads += 1
        return super().metrics()


async def test_stock_vllm_is_read_at_its_own_period_and_recounted_from_streamed_tokens_between() -> None:
    engine = CountingVllm(block=False, tokens=60, token_delay=0.02)
    async with (
        upstreams(engine) as (up,),
        router([up.url], policy="llumnix", refresh_ms=20, metrics_read_ms=60_000) as (app, url),
        httpx.AsyncClient(timeout=10) as c,
    ):
        inst = next(iter(app.pool.instances.values()))
        reads_at_start = engine.metrics_reads
        async with c.stream("POST", url + "/v1/completions", json={"prompt": "a b c", "stream": True}) as r:
            seen_decoding = False
            async for _ in r.aiter_lines():
                snap = inst.tracker.snapshot if inst.tracker is not None else None
                if snap is not None and any(s.output_tokens > 0 for s in snap.running):
                    seen_decoding = True
        # over the whole stream (about 1.2 s, 60 refreshes) /metrics was not read again, yet the tracker's
        # snapshot followed the tokens streaming back
        assert engine.metrics_reads - reads_at_start <= 1
        assert seen_decoding
