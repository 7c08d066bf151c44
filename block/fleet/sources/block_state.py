"""A Block engine: GET /state is the exact queue (`Snapshot.to_dict()`) and the step in flight."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from block.fleet.sources.base import Reading, StateSource
from block.fleet.sources.lean_get import MAX_BODY_BYTES, LeanGet
from block.replica import ReplicaConfig, Snapshot


class BlockState(StateSource):
    name = "block"
    reads = "/state"
    accepts_expected_field = True
    tracker_keeps_up = True  # the engine's queue is exact at each read; routes and finishes fill in between

    def __init__(self, url: str, base_config: ReplicaConfig, read_period_s: float | None = None) -> None:
        # no period of its own: /state is cheap for the engine, so it is read at every refresh (as far
        # as the fleet's read budget allows, see StateSource.refresh)
        super().__init__(url, base_config, None)
        # reads through a lean kept connection where the URL allows (a general client's request costs the
        # router several times more, and a large fleet is read a thousand times a second)
        self._lean = LeanGet.where_plain(url, "/state")

    @classmethod
    async def detect(cls, session: aiohttp.ClientSession, url: str, timeout: float) -> bool | None:
        try:
            async with session.get(url + "/state", timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                await resp.read()
                if resp.status == 200:
                    return True
                if resp.status in (404, 405):  # no /state: another kind of server
                    return False
        except (aiohttp.ClientError, TimeoutError, OSError):
            pass
        return None

    async def read(self, session: aiohttp.ClientSession, timeout: float) -> Reading:
        if self._lean is not None:
            status, body = await self._lean.get(timeout)
            if status != 200:
                raise ValueError(f"/state answered {status}")
        else:
            async with session.get(self.url + "/state", timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                resp.raise_for_status()
                body = await resp.content.read(MAX_BODY_BYTES + 1)  # (the lean path's bound too)
                if len(body) > MAX_BODY_BYTES or not resp.content.at_eof():
                    raise ValueError(f"/state longer than {MAX_BODY_BYTES} bytes")
        state = orjson.loads(body)
        if not isinstance(state, dict):
            raise ValueError("/state did not return an object")
        return reading(state)

    def close(self) -> None:
        if self._lean is not None:
            self._lean.close()


def reading(state: dict[str, Any]) -> Reading:
    """A /state body as a tracker observes it."""
    end = state.get("step_in_progress_until")
    return Reading(Snapshot.from_dict(state), None if end is None else float(end))
