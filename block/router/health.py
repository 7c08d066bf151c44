"""Active health checks: GET /health every `interval`; one failure takes an instance out of rotation
(so a dead one is out within interval + timeout < 1 s by default), one success brings it back.

A check that only timed out while the instance's state endpoint answered, or a proxied response from
it delivered bytes, within the same window is a busy instance (or a busy router), not a dead one: it
stays in rotation. That leniency only keeps an instance in; rejoining takes a check that answered 200.
Refused or reset connections and error statuses count at once."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

import aiohttp

from block.router.config import RouterConfig
from block.router.instance import Instance

log = logging.getLogger("block.router.health")


async def check_once(session: aiohttp.ClientSession, inst: Instance, timeout: float) -> str | None:
    """None when healthy, else why not (starting with "timeout" when it only timed out)."""
    try:
        if inst.health_get is not None:  # a large fleet is checked hundreds of times a second: the lean way
            status = (await inst.health_get.get(timeout))[0]
        else:
            limit = aiohttp.ClientTimeout(total=timeout)
            async with session.get(inst.url + "/health", timeout=limit) as resp:
                await resp.read()
                status = resp.status
        return None if status == 200 else f"/health answered {status}"
    except TimeoutError:
        return f"timeout: /health took over {timeout:.2f} s"
    except (aiohttp.ClientError, OSError, ValueError) as e:
        return f"{type(e).__name__}: {e}"


class Rotation(Protocol):
    """What the health checks act on (the instance pool)."""

    config: RouterConfig
    session: aiohttp.ClientSession

    def set_healthy(self, inst: Instance, healthy: bool) -> None: ...

    async def bring_up(self, inst: Instance) -> None: ...

    def probe_idle_sidecar(self, inst: Instance) -> None: ...


async def health_loop(pool: Rotation, inst: Instance) -> None:
    cfg = pool.config
    lag = 0.0  # how late this loop last woke up: our own event loop being busy
    while not inst.removed:
        started = time.monotonic()
        error = await check_once(pool.session, inst, cfg.health_timeout)
        if error is not None and error.startswith("timeout") and inst.healthy:
            # Only keeps an instance in rotation: a timeout never brings one back. A dead server whose
            # process is still being torn down accepts connections but never answers, and must not
            # rejoin on "it only timed out".
            if max(inst.state_ok_at, inst.data_at) >= started - cfg.health_interval:
                error = None  # slow, but it answered something just now: alive
            elif lag > cfg.health_timeout / 2:
                error = None  # the router itself is behind: the timeout says nothing about the instance
        if error is None:
            inst.consecutive_failures = 0
            if not inst.healthy:
                await pool.bring_up(inst)
        else:
            inst.consecutive_failures += 1
            inst.last_error = error
            if inst.healthy:
                log.warning("instance %s out of rotation: %s", inst.id, error)
                pool.set_healthy(inst, False)
        if inst.sidecar is not None:
            pool.probe_idle_sidecar(inst)
        slept_from = time.monotonic()
        await asyncio.sleep(cfg.health_interval)
        lag = time.monotonic() - slept_from - cfg.health_interval
