"""The router's use of a `block predictor` sidecar: forecasts, and best-effort /routed and /finished
notices (a sidecar that is down must never affect serving; the decision's deadline bounds predict).

Notices are bounded so that a stopped or hung sidecar costs the router a fixed amount: each gets
`timeout_s`, at most `max_in_flight` are outstanding per sidecar, and one that cannot be sent (over the
cap, too slow, refused or answered with an error) is dropped and counted by `on_drop(reason)` with
reason "overflow", "timeout" or "error". A lost notice only makes that sidecar's view of its queue
less exact until its next snapshots (it forgets what it never sees; see InstanceTracker).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp

from block.policies import Forecast
from block.predictor.client import PredictorClient, PredictorError

_ERRORS = (aiohttp.ClientError, OSError, PredictorError, ValueError, KeyError)

OVERFLOW, TIMEOUT, ERROR = "overflow", "timeout", "error"


def _ignore(_reason: str) -> None:
    pass


class SidecarClient:
    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        token: str | None = None,
        *,
        timeout_s: float = 2.0,
        max_in_flight: int = 128,
        on_drop: Callable[[str], None] = _ignore,
    ) -> None:
        self.client = PredictorClient(base_url, session, token)
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self.on_drop = on_drop
        self._notices: set[asyncio.Task[None]] = set()

    async def predict(self, prompt_tokens: int, expected_output_tokens: int) -> Forecast:
        return await self.client.predict(prompt_tokens, expected_output_tokens)

    def routed(self, request_id: str, prompt_tokens: int, expected_output_tokens: int) -> None:
        self._notify(self.client.routed, request_id, prompt_tokens, expected_output_tokens)

    def finished(self, request_id: str) -> None:
        self._notify(self.client.finished, request_id)

    @property
    def notices_in_flight(self) -> int:
        return len(self._notices)

    def close(self) -> None:
        """Cancel the notices still outstanding (the instance or the router is going away)."""
        for task in list(self._notices):
            task.cancel()

    def _notify(self, call: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        if len(self._notices) >= self.max_in_flight:
            self.on_drop(OVERFLOW)
            return
        task = asyncio.create_task(self._send(call, args))
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    async def _send(self, call: Callable[..., Coroutine[Any, Any, None]], args: tuple[Any, ...]) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await call(*args)
        except TimeoutError:
            self.on_drop(TIMEOUT)
        except _ERRORS:
            self.on_drop(ERROR)
