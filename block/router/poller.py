"""State refresh: every `refresh_ms`, fetch an in-rotation instance's snapshot and hand it to its tracker."""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING

import aiohttp

from block.router.instance import BLOCK, VLLM
from block.router.state_source import fetch_block_state, fetch_vllm_snapshot, observe

if TYPE_CHECKING:
    from block.router.instance import Instance
    from block.router.instance_pool import InstancePool


async def refresh_once(pool: InstancePool, inst: Instance) -> None:
    timeout = max(0.2, pool.config.health_interval)
    try:
        if inst.kind == BLOCK:
            state, snapshot = await fetch_block_state(pool.session, inst, timeout), None
        elif inst.kind == VLLM:
            (snapshot, _), state = (
                await fetch_vllm_snapshot(pool.session, inst, pool.base_config, timeout),
                None,
            )
        else:
            return
        if inst.tracker is not None:
            observe(inst.tracker, snapshot, state, time.monotonic())
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
        inst.last_state_error = f"{type(e).__name__}: {e}"
        return
    inst.last_state_error = None
    inst.state_ok_at = time.monotonic()


async def state_loop(pool: InstancePool, inst: Instance) -> None:
    period = pool.config.refresh_ms / 1000.0
    await asyncio.sleep(random.uniform(0, period))  # spread the pollers of many instances apart
    while not inst.removed:
        started = time.monotonic()
        if inst.healthy:
            await refresh_once(pool, inst)
        await asyncio.sleep(max(0.0, period - (time.monotonic() - started)))
