"""One decision's forecasts: for the policy's targets, from sidecars or in process, within bounds.

The router and the simulator both make their forecasts here. A missing forecast is None; the policy then
falls back (and the router counts it): a slow or dead predictor never fails a request.

In-process forecasts are CPU work; in the router it runs on the event loop that also carries every
proxied stream, so a burst of requests must not turn into a burst of forecasts that starves it:
- per decision, the deadline: a forecast in progress stops when it passes, the rest are not started;
- over time, a budget (ForecastBudget): forecasts take at most FORECAST_SHARE of the loop's time, with
  a reserve of RESERVE_DEADLINES deadlines for bursts; while it is spent, decisions go without them;
- less work per forecast: each tracker keeps its prepared Forecaster until its state changes (a
  snapshot, a request routed or finished), and the harm term (added delay to the requests already
  there) is only computed for a policy that weighs it.
The simulator runs in virtual time: no deadline and no budget, the same code otherwise.

Sidecar forecasts are queried concurrently and awaited up to the deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from block.fleet.tracker import InstanceTracker, added_delay_for
from block.policies import Policy
from block.request import Forecast, RoutingRequest

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


class RemoteForecaster(Protocol):
    """A predictor sidecar as the router reaches it."""

    async def predict(self, prompt_tokens: int, expected_output_tokens: int) -> Forecast: ...


class Forecasts:
    """Forecasts for the decisions of one policy.

    `deadline_s`: per decision, from its start (time.perf_counter()); None: none. `budget`: see
    ForecastBudget; None: none. `horizon_s`: forecasts stop that long after the request's arrival
    (provisioning only needs "over the SLO or not"; not with a harm term, which needs the full run).
    """

    def __init__(
        self,
        policy: Policy,
        deadline_s: float | None = None,
        budget: ForecastBudget | None = None,
        horizon_s: float | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.added_delay = added_delay_for(policy)
        self.deadline_s = deadline_s
        self.budget = budget
        self.horizon_s = horizon_s if self.added_delay == "none" else None
        self.log = log or logging.getLogger(__name__)
        self.capped = 0  # forecasts stopped at the horizon

    def in_process(
        self,
        request: RoutingRequest,
        views: Sequence[InstanceTracker],
        now: float,
        started: float | None = None,
    ) -> list[Forecast | None]:
        """Each view's forecast for `request` routed at `now` (the trackers' clock). `started`: when the
        decision began (time.perf_counter()), from which the deadline and the budget count."""
        budget, deadline = self.budget, None
        if started is None and (budget is not None or self.deadline_s is not None):
            started = time.perf_counter()
        if budget is not None and started is not None and not budget.available(started):
            return [None] * len(views)  # forecasts took their share of the loop lately: shed them
        if self.deadline_s is not None and started is not None:
            deadline = started + self.deadline_s
        out: list[Forecast | None] = []
        refused: list[str] = []
        for v in views:
            if deadline is not None and time.perf_counter() > deadline:  # out of time: the rest unknown
                out.append(None)
                continue
            out.append(self._one(v, request, now, deadline, refused))
        if refused:
            self._log_unfit(request, refused)
        if budget is not None and started is not None:
            budget.spend(time.perf_counter() - started)
        return out

    async def with_sidecars(
        self,
        request: RoutingRequest,
        views: Sequence[InstanceTracker],
        sidecars: Sequence[RemoteForecaster | None],
        started: float,
        clock: Callable[[], float],
    ) -> list[Forecast | None]:
        """Ask each view's sidecar concurrently, up to the deadline; a view without one is forecast in
        process once the sidecars answered (at `clock()` then)."""
        tasks: list[asyncio.Task[Forecast] | None] = [
            None
            if s is None
            else asyncio.create_task(s.predict(request.prompt_tokens, request.expected_output_tokens))
            for s in sidecars
        ]
        live = [t for t in tasks if t is not None]
        remaining = None if self.deadline_s is None else self.deadline_s - (time.perf_counter() - started)
        if live and (remaining is None or remaining > 0):
            await asyncio.wait(live, timeout=remaining)
        out: list[Forecast | None] = []
        refused: list[str] = []
        for t, v in zip(tasks, views, strict=True):
            if t is None:
                out.append(self._one(v, request, clock(), None, refused))
            elif t.done() and not t.cancelled() and t.exception() is None:
                f = t.result()
                v.last_forecast = f
                out.append(f)
            else:
                t.cancel()
                out.append(None)
        if refused:
            self._log_unfit(request, refused)
        return out

    def _one(
        self,
        view: InstanceTracker,
        request: RoutingRequest,
        now: float,
        deadline: float | None,
        refused: list[str],
    ) -> Forecast | None:
        try:  # a forecast still running at the deadline stops there (None)
            f = view.predict(
                request, now, added_delay=self.added_delay, deadline=deadline, horizon_s=self.horizon_s
            )
        except ValueError as e:  # the request cannot fit there (over-length): expected, the engine says 400
            refused.append(f"{view.id}: {e}")
            return None
        except Exception:  # a predictor bug must never fail a request
            self.log.exception("forecast failed on %s", view.id)
            return None
        if self.horizon_s is not None and getattr(f, "capped", False):
            self.capped += 1
        return f

    def _log_unfit(self, request: RoutingRequest, reasons: list[str]) -> None:
        """One line per request that fits no instance's forecast (an over-length prompt is the client's
        error; the engine will answer it 400), not a traceback per instance."""
        self.log.info(
            "no forecast for a request of %d prompt tokens: it does not fit %d instance(s) (%s)",
            request.prompt_tokens,
            len(reasons),
            reasons[0],
        )
