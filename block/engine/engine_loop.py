"""The engine loop: one task drives one Replica in real time.

Each step: form the batch at the replica's time, take its duration from the profile (times the model
error's factor at the step's start, if any, then noise),
sleep until `deadline = step_start + duration` on a monotonic clock, then complete the batch at the
deadline and hand the emitted tokens to the waiting requests. The next step starts at the previous
deadline, not at the wake-up time, so the event loop's lateness does not accumulate; after idling (or
falling more than `max_lag_s` behind, e.g. a blocked loop) the step starts at the current time.

The replica's virtual time is seconds on this engine's monotonic clock since it started.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from block.clock import sleep_until
from block.engine.metrics import STEP_LAG_BUCKETS, EngineMetrics, LatencyHistogram, LiveState
from block.profiles import StepNoise
from block.profiles.model_error import Factor
from block.replica import Replica, Request, StepOutcome

log = logging.getLogger(__name__)

FINISHED = -1  # what a stream gets instead of a token count when its request ended early


class EngineClock:
    """Seconds since the engine started, on the monotonic clock (not loop.time(): uvloop's has ms steps)."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._t0


class RequestHandle:
    """What the HTTP side holds for one request in the engine.

    A stream waits with `wait_beyond(n)` for its (n+1)-th token: one future per wake-up, set by the
    engine after a step, instead of a queue item per token."""

    __slots__ = ("request", "stream", "done", "stopped_by_cap", "last_token_time", "error", "_waiter")

    def __init__(
        self, request: Request, stream: bool, done: asyncio.Future[None], stopped_by_cap: bool
    ) -> None:
        self.request = request
        self.stream = stream
        self.done = done  # set when the request finished or ended early (see `error`)
        self.stopped_by_cap = stopped_by_cap  # finish_reason "length" (a cap) rather than "stop" (EOS)
        self.last_token_time = 0.0
        self.error: str | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def finish_reason(self) -> str:
        return "length" if self.stopped_by_cap else "stop"

    def notify(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    async def wait_beyond(self, sent: int) -> int:
        """Tokens generated so far once there are more than `sent`; FINISHED if the request ended early."""
        while self.error is None and self.request.num_generated <= sent:
            self._waiter = self.done.get_loop().create_future()
            await self._waiter
        return FINISHED if self.error is not None else self.request.num_generated


class EngineLoop:
    def __init__(
        self,
        replica: Replica,
        noise: StepNoise,
        clock: EngineClock | None = None,
        metrics: EngineMetrics | None = None,
        max_lag_s: float = 1.0,
        model_error: Factor | None = None,
    ) -> None:
        self.replica = replica
        self.noise = noise
        # The true speed the profile does not know, as a step-time factor over wall-clock time (settings.py).
        self.model_error = model_error
        self.clock = clock or EngineClock()
        self._wall_offset = time.time() - self.clock.now()  # engine clock -> wall-clock seconds
        self.metrics = metrics
        self.max_lag_s = max_lag_s
        self.step_in_progress_until: float | None = None
        self.num_steps = 0
        self.num_lag_resets = 0  # times the loop fell more than max_lag_s behind (a starved host)
        # How well the loop keeps real time (read by live runs to judge whether they are valid).
        self.step_seconds = 0.0
        self.lag_dropped_seconds = 0.0
        self.step_lag = LatencyHistogram(
            "block:engine_step_lag_seconds",
            "How late the engine loop completed each step after its deadline (seconds).",
            STEP_LAG_BUCKETS,
        )
        self._handles: dict[Request, RequestHandle] = {}
        self._wakeup = asyncio.Event()
        self._idle = True
        # /state is polled every few ms by predictors: the snapshot is rebuilt only after a change.
        self._version = 0
        self._snapshot: tuple[int, dict[str, Any]] | None = None

    def now(self) -> float:
        return self.clock.now()

    # -- requests --------------------------------------------------------------------------------

    def submit(self, request: Request, stream: bool, stopped_by_cap: bool) -> RequestHandle:
        """Queue `request` (its arrival time set to now). Raises ValueError if the replica refuses it."""
        request.arrival_time = self.now()
        self.replica.add(request)
        handle = RequestHandle(request, stream, asyncio.get_running_loop().create_future(), stopped_by_cap)
        self._handles[request] = handle
        self._version += 1
        self._wakeup.set()
        return handle

    def abort(self, handle: RequestHandle) -> None:
        """The client went away: drop the request and free its KV blocks (safe mid-step)."""
        req = handle.request
        if self._handles.pop(req, None) is None:
            return  # already finished
        self.replica.abort(req)
        self._version += 1
        if self.metrics is not None:
            self.metrics.finished["abort"] += 1
        self._end(handle, "request aborted")

    @property
    def num_in_flight(self) -> int:
        return len(self._handles)

    # -- state -----------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The replica snapshot with `now` = the engine clock now (not the last step's end)."""
        cached = self._snapshot
        if cached is None or cached[0] != self._version:
            cached = self._snapshot = (self._version, self.replica.snapshot().to_dict())
        d = dict(cached[1])
        d["now"] = self.now()
        if self.step_in_progress_until is not None:
            d["step_in_progress_until"] = self.step_in_progress_until
        return d

    def live(self) -> LiveState:
        r = self.replica
        return LiveState(
            len(r.running),
            len(r.waiting),
            r.kv.usage,
            r.num_preemptions,
            self.num_steps,
            self.num_lag_resets,
            self.step_seconds,
            self.lag_dropped_seconds,
            self.step_lag,
            getattr(r.kv, "queries", 0),
            getattr(r.kv, "hits", 0),
        )

    # -- the loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            self._fail_all("the engine is shutting down")
            raise
        except Exception as e:  # keep the server answering: fail what is in flight, say why
            log.exception("engine loop crashed")
            self._fail_all(f"engine loop crashed: {e!r}")
            raise

    async def _run(self) -> None:
        r = self.replica
        while True:
            if not r.has_work:
                self._idle = True
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            now = self.now()
            if self._idle:
                r.advance_to(now)  # after idling the next step starts now, never in the past
                self._idle = False
            elif now - r.now > self.max_lag_s:
                # The host stalled us for longer than catching up step by step is worth: restart the
                # timeline at now (the emulated GPU lost that time). Counted in /metrics.
                self.lag_dropped_seconds += now - r.now
                r.advance_to(now)
                self.num_lag_resets += 1
            batch = r.schedule()
            self._version += 1
            if not batch.requests:
                # Cannot happen for requests the replica accepted (add() refuses any that never fit);
                # do not spin if it does.
                log.error("nothing schedulable with %d requests queued", r.num_requests)
                await asyncio.sleep(0.01)
                continue
            mean = r.profile.step_time(batch.shape())
            if self.model_error is not None:
                mean *= self.model_error(r.now + self._wall_offset)
            duration = self.noise.apply(mean)
            deadline = r.now + duration
            self.step_in_progress_until = deadline
            await sleep_until(deadline, self.now)
            self.step_lag.observe(self.now() - deadline)
            self.step_seconds += duration
            outcome = r.complete(batch, deadline)
            self._version += 1
            self.step_in_progress_until = None
            self.num_steps += 1
            # No await between here and the next schedule(): tokens are handed over, and requests that
            # arrive in reaction to them join a later step, exactly as with a real engine.
            self._publish(outcome)

    def _publish(self, outcome: StepOutcome) -> None:
        end = outcome.end
        m = self.metrics
        handles = self._handles
        for req in outcome.emitted:
            h = handles.get(req)
            if h is None:
                continue
            if m is not None:
                if req.num_generated == 1:
                    m.prompt_tokens += req.prompt_tokens
                    m.ttft.observe(end - req.arrival_time)
                else:
                    m.itl.observe(end - h.last_token_time)
                m.generation_tokens += 1
            h.last_token_time = end
            if h.stream:
                h.notify()
        for req in outcome.finished:
            h = handles.pop(req, None)
            if h is None:
                continue
            if m is not None:
                m.e2e.observe(end - req.arrival_time)
                m.finished[h.finish_reason] += 1
            if not h.done.done():
                h.done.set_result(None)

    def _fail_all(self, reason: str) -> None:
        for req, h in list(self._handles.items()):
            self.replica.abort(req)
            self._end(h, reason)
        self._handles.clear()
        self._version += 1

    @staticmethod
    def _end(handle: RequestHandle, reason: str) -> None:
        """End a request that will not finish: wake its stream or its waiting handler."""
        handle.error = reason
        handle.notify()
        if not handle.done.done():
            handle.done.set_result(None)
