"""The router's use of a `block predictor` sidecar: forecasts, and best-effort /routed and /finished
notices (a sidecar that is down must never affect serving; the decision's deadline bounds predict).
The notices go out as the instance's request listener, each in a background task.

Every call's outcome is remembered for GET /instances (`predictor_healthy`, `predictor_last_error`):
traffic itself is the health check. Only a sidecar the router has not heard from for `IDLE_PROBE_S`
gets a GET /health, from the instance's health loop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp

from block.fleet.listeners import RequestListener, Routed
from block.predictor.client import PredictorClient, PredictorError
from block.request import Forecast

_ERRORS = (aiohttp.ClientError, TimeoutError, OSError, PredictorError, ValueError, KeyError)

IDLE_PROBE_S = 5.0  # no call answered or failed for this long: probe /health (at most this often)


Spawn = Callable[[Coroutine[Any, Any, None]], None]


class SidecarClient(RequestListener):
    def __init__(self, base_url: str, session: aiohttp.ClientSession, spawn: Spawn) -> None:
        """`spawn` runs a notice in the background (the router keeps and cancels the tasks)."""
        self.client = PredictorClient(base_url, session)
        self.spawn = spawn
        self.healthy: bool | None = None  # None until the first call ends
        self.last_error: str | None = None
        self.heard_at = float("-inf")  # time.monotonic() of the last call that ended either way

    def _record(self, error: BaseException | str | None) -> None:
        self.heard_at = time.monotonic()
        self.healthy = error is None
        if isinstance(error, BaseException):
            error = f"{type(error).__name__}: {error}"
        if error is not None:
            self.last_error = error

    async def predict(self, prompt_tokens: int, expected_output_tokens: int) -> Forecast:
        try:
            forecast = await self.client.predict(prompt_tokens, expected_output_tokens)
        except _ERRORS as e:  # not CancelledError: a forecast past the decision's deadline says nothing
            self._record(e)
            raise
        self._record(None)
        return forecast

    def routed(self, instance: str, request: Routed) -> None:
        self.spawn(self._routed(request.request_id, request.prompt_tokens, request.expected_output_tokens))

    def finished(self, instance: str, request_id: str, at: float) -> None:
        self.spawn(self._finished(request_id))

    async def _routed(self, request_id: str, prompt_tokens: int, expected_output_tokens: int) -> None:
        try:
            await self.client.routed(request_id, prompt_tokens, expected_output_tokens)
            self._record(None)
        except _ERRORS as e:
            self._record(e)

    async def _finished(self, request_id: str) -> None:
        try:
            await self.client.finished(request_id)
            self._record(None)
        except _ERRORS as e:
            self._record(e)

    def claim_probe(self) -> bool:
        """True (once per IDLE_PROBE_S) when nothing was heard for that long and a probe should go."""
        now = time.monotonic()
        if now - self.heard_at < IDLE_PROBE_S:
            return False
        self.heard_at = now  # one probe at a time, even one that hangs until its timeout
        return True

    async def probe(self, timeout: float) -> None:
        """GET /health, bounded by `timeout`."""
        ok = False
        with contextlib.suppress(*_ERRORS):
            ok = await asyncio.wait_for(self.client.health(), timeout)
        self._record(None if ok else f"GET /health failed or timed out after {timeout:.2f} s")
