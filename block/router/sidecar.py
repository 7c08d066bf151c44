"""The router's use of a `block predictor` sidecar: forecasts, and best-effort /routed and /finished
notices, /routed with the instance's calibration factors when calibration is on (a sidecar that is down
must never affect serving; the decision's deadline bounds predict).
The notices go out from the instance's request listener (`SidecarNotices`), each in a background task.

Every call's outcome is remembered for GET /instances (`predictor_healthy`, `predictor_last_error`):
traffic itself is the health check. Only a sidecar the router has not heard from for `IDLE_PROBE_S`
gets a GET /health, from the instance's health loop.

Notices are bounded so that a stopped or hung sidecar costs the router a fixed amount: each gets
`timeout_s`, at most `max_in_flight` are outstanding per sidecar, and one that cannot be sent (over the
cap, too slow, refused or answered with an error) is dropped and counted by `on_drop(reason)` with
reason "overflow", "timeout" or "error". A lost notice only makes that sidecar's view of its queue
less exact until its next snapshots (it forgets what it never sees; see InstanceTracker).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp

from block.fleet.calibration import InstanceCalibration
from block.fleet.listeners import RequestListener, Routed
from block.predictor.client import PredictorClient, PredictorError
from block.request import Forecast

_ERRORS = (aiohttp.ClientError, OSError, PredictorError, ValueError, KeyError)

OVERFLOW, TIMEOUT, ERROR = "overflow", "timeout", "error"
IDLE_PROBE_S = 5.0  # no call answered or failed for this long: probe /health (at most this often)


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
        except (*_ERRORS, TimeoutError) as e:  # not CancelledError: past the deadline says nothing
            self._record(e)
            raise
        self._record(None)
        return forecast

    def routed(
        self,
        request_id: str,
        prompt_tokens: int,
        expected_output_tokens: int,
        calibration: dict[str, float] | None = None,
    ) -> None:
        self._notify(self.client.routed, request_id, prompt_tokens, expected_output_tokens, calibration)

    def finished(self, request_id: str) -> None:
        self._notify(self.client.finished, request_id)

    @property
    def notices_in_flight(self) -> int:
        return len(self._notices)

    def close(self) -> None:
        """Cancel the notices still outstanding (the instance or the router is going away)."""
        for task in list(self._notices):
            task.cancel()

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
        with contextlib.suppress(*_ERRORS, TimeoutError):
            ok = await asyncio.wait_for(self.client.health(), timeout)
        self._record(None if ok else f"GET /health failed or timed out after {timeout:.2f} s")

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
        except TimeoutError as e:
            self._record(e)
            self.on_drop(TIMEOUT)
        except _ERRORS as e:
            self._record(e)
            self.on_drop(ERROR)
        else:
            self._record(None)


class SidecarNotices(RequestListener):
    """The sidecar's /routed and /finished notices, as a listener of its instance's requests. With the
    instance's `calibration`, each /routed notice carries its factors (the sidecar sees no tokens)."""

    def __init__(self, sidecar: SidecarClient, calibration: InstanceCalibration | None = None) -> None:
        self.sidecar = sidecar
        self.calibration = calibration

    def routed(self, instance: str, routed: Routed) -> None:
        request = routed.request
        factors = None if self.calibration is None else self.calibration.factors()
        self.sidecar.routed(request.id, request.prompt_tokens, request.expected_output_tokens, factors)

    def finished(self, instance: str, request_id: str, at: float) -> None:
        self.sidecar.finished(request_id)
