"""The engine loop keeps the replica's virtual time on the wall clock, step after step."""

from __future__ import annotations

import asyncio
import time

import pytest

from block.engine.engine_loop import FINISHED, EngineClock, EngineLoop
from block.profiles import StepNoise
from block.replica import Replica, Request
from tests.engine.conftest import engine_settings


def _loop(max_lag_s: float = 1.0) -> EngineLoop:
    s = engine_settings()
    return EngineLoop(Replica(s.config, s.profile), StepNoise.exact(), EngineClock(), max_lag_s=max_lag_s)


async def test_live_timeline_equals_the_virtual_one_and_never_runs_early() -> None:
    engine = _loop(max_lag_s=float("inf"))  # a starved CI host must not restart the timeline here
    task = asyncio.create_task(engine.run())
    try:
        live = [Request(f"r{i}", 70 + 10 * i, 6) for i in range(3)]
        wall0 = time.monotonic()
        handles = [engine.submit(r, stream=True, stopped_by_cap=True) for r in live]
        await asyncio.wait_for(asyncio.gather(*(h.done for h in handles)), 5)
        wall = time.monotonic() - wall0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    s = engine_settings()
    virtual = Replica(s.config, s.profile)
    twins = [Request(r.id, r.prompt_tokens, r.output_tokens) for r in live]
    for t in twins:
        virtual.add(t)
    while virtual.step() is not None:
        pass
    start = live[0].first_scheduled_time
    assert start is not None
    for r, t in zip(live, twins, strict=True):
        # Steps chain deadline to deadline: the live timeline is the virtual one, shifted by the start.
        assert r.first_token_time - start == pytest.approx(t.first_token_time, abs=1e-9)
        assert r.finish_time - start == pytest.approx(t.finish_time, abs=1e-9)
    assert wall >= max(t.finish_time for t in twins)  # a step never ends before its deadline
    assert all(h.error is None and h.request.num_generated == 6 for h in handles)


async def test_abort_mid_step_frees_blocks_and_ends_the_stream() -> None:
    engine = _loop()
    task = asyncio.create_task(engine.run())
    try:
        req = Request("a", 100, 50)
        handle = engine.submit(req, stream=True, stopped_by_cap=True)
        assert await asyncio.wait_for(handle.wait_beyond(0), 2) == 1
        assert engine.replica.kv.free_blocks < engine.replica.kv.num_blocks
        waiting = asyncio.ensure_future(handle.wait_beyond(req.num_generated))
        await asyncio.sleep(0)
        engine.abort(handle)
        assert engine.replica.kv.free_blocks == engine.replica.kv.num_blocks
        assert await asyncio.wait_for(waiting, 1) == FINISHED and handle.error == "request aborted"
        await asyncio.sleep(0.05)  # the step in flight completes without it
        assert not engine.replica.has_work and engine.num_in_flight == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_shutdown_ends_requests_in_flight() -> None:
    engine = _loop()
    task = asyncio.create_task(engine.run())
    handle = engine.submit(Request("a", 10, 1000 - 10), stream=False, stopped_by_cap=True)
    await asyncio.sleep(0.03)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert handle.done.done() and handle.error is not None
