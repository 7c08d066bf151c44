"""One routing decision: candidates, forecasts within the deadline, the policy's choice, bookkeeping.

Forecasts come either from each instance's tracker in this process (synchronous, bounded by the
deadline) or from sidecar predictors queried concurrently and awaited with asyncio.wait up to the
deadline. A missing forecast is None; the policy then falls back and the fallback is counted - a slow
or dead predictor never fails a request.

In-process forecasts are CPU work on the event loop that also carries every proxied stream, so a burst
of requests must not turn into a burst of forecasts that starves it:
- per decision, the deadline: a forecast in progress stops when it passes, the rest are not started;
- over time, a budget (ForecastBudget): forecasts take at most FORECAST_SHARE of the loop's time, with
  a reserve of RESERVE_DEADLINES deadlines for bursts; while it is spent, decisions go without them;
- less work per forecast: each tracker keeps its prepared Forecaster until its state changes (a
  snapshot, a request routed or finished), and the harm term (added delay to the requests already
  there) is only computed for a policy that weighs it, as in the simulator.
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

FORECAST_SHARE = 0.5  # of the event loop's time, at most, for in-process forecasts
RESERVE_DEADLINES = 20  # the budget's reserve for bursts, in deadlines (100 ms by default)


class ForecastBudget:
    """A token bucket of event-loop seconds for in-process forecasts.

    It fills at `share` seconds per second of wall time up to `reserve_s`; each decision's forecasts
    take the time they ran. A decision may forecast while the level is positive, so one slow set of
    forecasts (deep queues, a slow machine) overdraws it and the next ones wait until it refills.
    """

    def __init__(self, share: float, reserve_s: float) -> None:
        self.share = share
        self.reserve_s = reserve_s
        self.level = reserve_s
        self._at = time.perf_counter()

    def available(self, now: float) -> bool:
        """Refill up to `now` (a time.perf_counter() value); is there time left?"""
        self.level = min(self.reserve_s, self.level + (now - self._at) * self.share)
        self._at = now
        return self.level > 0

    def spend(self, seconds: float) -> None:
        self.level -= seconds


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
        self.budget = ForecastBudget(FORECAST_SHARE, RESERVE_DEADLINES * deadline_s)
        # The harm term costs a run per forecaster: only for a policy that weighs it (the simulator's
        # rule, block.predictor.added_delay_for; not imported: the router runs without the predictor).
        self.added_delay = "horizon" if getattr(policy, "harm_weight", 0.0) else "none"

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
            forecasts: list[Forecast | None]
            if any(i.sidecar is not None for i in targets):
                forecasts = await self._sidecar_forecasts(request, targets, started)
            elif self.budget.available(started):
                forecasts = self._local_forecasts(request, views, now, started)
                self.budget.spend(time.perf_counter() - started)
            else:  # forecasts took their share of the event loop lately: shed them
                forecasts = [None] * len(views)
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
        self.metrics.decided(self.policy.wants_forecasts, choice.fallback)
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
        refused: list[str] = []
        for v in views:
            if time.perf_counter() > deadline:  # out of time: the rest stay unknown
                out.append(None)
                continue
            try:  # a forecast still running at the deadline stops there (None)
                out.append(v.predict(request, now, added_delay=self.added_delay, deadline=deadline))
            except (
                ValueError
            ) as e:  # the request cannot fit there (over-length): expected, the engine says 400
                refused.append(f"{v.id}: {e}")
                out.append(None)
            except Exception:  # a predictor bug must never fail a request
                log.exception("forecast failed on %s", v.id)
                out.append(None)
        if refused:
            _log_unfit(request, refused)
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
                try:
                    now = time.monotonic()
                    out.append(inst.tracker.predict(request, now, added_delay=self.added_delay))
                except ValueError as e:
                    _log_unfit(request, [f"{inst.id}: {e}"])
                    out.append(None)
            elif t.done() and not t.cancelled() and t.exception() is None:
                out.append(t.result())
            else:
                t.cancel()
                out.append(None)
        return out


def _log_unfit(request: RoutingRequest, reasons: list[str]) -> None:
    """One line per request that fits no instance's forecast (an over-length prompt is the client's
    error; the engine will answer it 400), not a traceback per instance."""
    log.info(
        "no forecast for a request of %d prompt tokens: it does not fit %d instance(s) (%s)",
        request.prompt_tokens,
        len(reasons),
        reasons[0],
    )
