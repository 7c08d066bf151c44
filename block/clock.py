"""Sleeping until a moment on a schedule, never before it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def sleep_until(deadline: float, now: Callable[[], float] = time.monotonic) -> None:
    """Return once `now() >= deadline`. Event-loop timers may fire a little early (uvloop's have
    millisecond resolution), so the remainder is slept out: a schedule kept this way never runs ahead."""
    while (remaining := deadline - now()) > 0:
        await asyncio.sleep(remaining)
