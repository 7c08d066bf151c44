"""One routing decision: candidates, forecasts within the deadline, the policy's choice, bookkeeping.

Forecasts come either from each instance's tracker in this process (synchronous, checked against the
deadline between instances) or from sidecar predictors queried concurrently and awaited with
asyncio.wait up to the deadline. A missing forecast is None; the policy then falls back and the
fallback is counted - a slow or dead predictor never fails a request. In-process forecasts that overran
the deadline are shed for the next SHED_FACTOR deadlines (they run on the event loop).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from block.policies import Forecast, Policy, RoutingRequest
from block.router.instance import Instance
from block.router.instance_pool import InstancePool
from block.router.metrics import RouterMetrics

log = logging.getLogger("block.router.decision")

SHED_FACTOR = 20  # after an overrun, decide without forecasts for this many deadlines (100 ms by default)


class NoInstance(Exception):
    """No instance is in rotation (or every one was already tried)."""


@dataclass(slots=True)
class Decision:
    instance: Instance
    forecast: Forecast | None
    fallback: bool
    decided_at: float  # time.monotonic() at the decision


class Decider:
    def __init__(self, policy: Policy, pool: InstancePool, metrics: RouterMetrics, deadline_s: float) -> None:
        self.policy = policy
        self.pool = pool
        self.metrics = metrics
        self.deadline_s = deadline_s
        self._debug = log.isEnabledFor(logging.DEBUG)
        self._skip_until = 0.0

    async def decide(self, request: RoutingRequest, exclude: Collection[Instance] = ()) -> Decision:
        started = time.perf_counter()
        candidates = self.pool.routable()
        if exclude:
            candidates = [i for i in candidates if i not in exclude]
        if not candidates:
            raise NoInstance
        by_view = {id(i.tracker): i for i in candidates}
        views: Any = [i.tracker for i in candidates]
        now = time.monotonic()
        if self.policy.wants_forecasts:
            views = list(self.policy.forecast_targets(views))
            targets = [by_view[id(v)] for v in views]
            if started < self._skip_until:  # forecasts recently overran the deadline: shed them
                forecasts: list[Forecast | None] = [None] * len(views)
            elif any(i.sidecar is not None for i in targets):
                forecasts = await self._sidecar_forecasts(request, targets, started)
            else:
                forecasts = self._local_forecasts(request, views, now, started)
                if time.perf_counter() - started > self.deadline_s:
                    # In-process forecasts block the event loop; when they overrun (deep queues, a slow
                    # machine) skip them for a while, so a burst cannot stall every other request.
                    self._skip_until = time.perf_counter() + SHED_FACTOR * self.deadline_s
            missed = 0
            # Assign and choose with no await in between: concurrent decisions share the views.
            for v, f in zip(views, forecasts, strict=True):
                v.forecast = f
                if f is None:
                    missed += 1
                else:
                    v.last_forecast = f
            if missed:
                self.metrics.forecasts_missed.inc(missed)
        choice = self.policy.choose(request, views, now)
        inst = by_view[id(choice.instance)]
        forecast = choice.instance.forecast if self.policy.wants_forecasts else None
        if choice.fallback:
            self.metrics.fallback()
        elapsed = time.perf_counter() - started
        self.metrics.decision_seconds.observe(elapsed)
        self.metrics.routed(inst.id)
        if self._debug:
            log.debug(
                "decision policy=%s instance=%s prompt=%d expected=%d candidates=%d fallback=%s "
                "forecast_e2e_s=%s decision_us=%.0f",
                self.policy.name,
                inst.id,
                request.prompt_tokens,
                request.expected_output_tokens,
                len(candidates),
                choice.fallback,
                None if forecast is None else round(forecast.e2e_s, 4),
                elapsed * 1e6,
            )
        return Decision(inst, forecast, choice.fallback, now)

    def _local_forecasts(
        self, request: RoutingRequest, views: list[Any], now: float, started: float
    ) -> list[Forecast | None]:
        deadline = started + self.deadline_s
        out: list[Forecast | None] = []
        for v in views:
            if time.perf_counter() > deadline:  # out of time: the rest stay unknown
                out.append(None)
                continue
            try:
                out.append(v.predict(request, now))
            except Exception:  # a predictor bug must never fail a request
                log.exception("forecast failed on %s", v.id)
                out.append(None)
        return out

    async def _sidecar_forecasts(
        self, request: RoutingRequest, targets: list[Instance], started: float
    ) -> list[Forecast | None]:
        tasks: list[asyncio.Task[Forecast] | None] = [
            asyncio.create_task(i.sidecar.predict(request.prompt_tokens, request.expected_output_tokens))
            if i.sidecar is not None
            else None
            for i in targets
        ]
        live = [t for t in tasks if t is not None]
        remaining = self.deadline_s - (time.perf_counter() - started)
        if live and remaining > 0:
            await asyncio.wait(live, timeout=remaining)
        out: list[Forecast | None] = []
        for t, inst in zip(tasks, targets, strict=True):
            if t is None:  # no sidecar for this one: forecast in process
                out.append(inst.tracker.predict(request, time.monotonic()))
            elif t.done() and not t.cancelled() and t.exception() is None:
                out.append(t.result())
            else:
                t.cancel()
                out.append(None)
        return out
