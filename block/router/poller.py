"""State refresh: every `refresh_s`, read an in-rotation instance's state from its source and hand it to
its tracker; no more often than `min_gap()` says (the fleet's read budget, see StateSource.refresh)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

import aiohttp

from block.router.instance import Instance


async def refresh_once(
    session: aiohttp.ClientSession,
    inst: Instance,
    timeout: float,
    on_snapshot: Callable[[], None] | None = None,
    min_gap_s: float = 0.0,
) -> None:
    source, tracker = inst.source, inst.tracker
    if source is None or tracker is None:
        return
    try:
        reading, asked = await source.refresh(session, timeout, inst.state_ok_at, min_gap_s)
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
        inst.last_state_error = f"{type(e).__name__}: {e}"
        return
    now = time.monotonic()
    tracker.observe(reading.snapshot, now, reading.step_end)
    if not asked:  # recounted between reads
        return
    inst.last_state_error = None
    inst.state_ok_at = now
    if on_snapshot is not None:
        on_snapshot()


async def state_loop(
    session: aiohttp.ClientSession,
    inst: Instance,
    refresh_s: float,
    timeout: float,
    on_snapshot: Callable[[], None] | None = None,
    min_gap: Callable[[], float] = lambda: 0.0,
) -> None:
    """`min_gap()`: the shortest time between two reads of this instance now (it follows the fleet's
    size); the refreshes in between ask the instance nothing."""
    await asyncio.sleep(random.uniform(0, tick_s(inst, refresh_s, min_gap())))  # spread the reads apart
    while not inst.removed:
        started = time.monotonic()
        gap = min_gap()
        if inst.healthy:
            await refresh_once(session, inst, timeout, on_snapshot, gap)
        await asyncio.sleep(max(0.0, tick_s(inst, refresh_s, gap) - (time.monotonic() - started)))


def tick_s(inst: Instance, refresh_s: float, min_gap_s: float) -> float:
    """How often the loop wakes: every refresh where the source recounts between reads; only to read where
    its tracker keeps up by itself (thousands of idle wake-ups a second on a large fleet otherwise)."""
    source = inst.source
    if source is not None and source.tracker_keeps_up:
        return max(refresh_s, min_gap_s)
    return refresh_s
