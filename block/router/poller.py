"""State refresh: every `refresh_s`, read an in-rotation instance's state from its source and hand it to
its tracker."""

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
) -> None:
    source, tracker = inst.source, inst.tracker
    if source is None or tracker is None:
        return
    try:
        reading, asked = await source.refresh(session, timeout, inst.state_ok_at)
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
) -> None:
    await asyncio.sleep(random.uniform(0, refresh_s))  # spread the pollers of many instances apart
    while not inst.removed:
        started = time.monotonic()
        if inst.healthy:
            await refresh_once(session, inst, timeout, on_snapshot)
        await asyncio.sleep(max(0.0, refresh_s - (time.monotonic() - started)))
