"""One decision's forecasts: for the policy's targets, from sidecars or in process, within bounds.

The router and the simulator both make their forecasts here. A missing forecast is None; the policy then
falls back (and the router counts it): a slow or dead predictor never fails a request.

In-process forecasts are CPU work; in the router it runs on the event loop that also carries every
proxied stream, so a burst of requests must not turn into a burst of forecasts that starves it:
- per decision, the deadline: a forecast in progress stops when it passes, the rest are not started;
- over time, a budget (ForecastBudget): forecasts take at most FORECAST_SHARE of the loop's time, with
  a reserve of RESERVE_DEADLINES deadlines for bursts; while it is spent, decisions go without them;
- less work per forecast: a state asked again reads its forecasts off the run it recorded without a
  candidate (block/predictor/timeline.py), about 10 us instead of a 100-200 us replay;
- each tracker keeps its prepared Forecaster until its state changes (a
  snapshot, a request routed or finished), prepared again after the decision where it can be
  (`settle`: the router calls it once the routed request is on its way), and the harm term (added
  delay to the requests already there) is only computed for a policy that weighs it;
- fewer forecasts, same choice (`candidates`): when the policy's score has a floor (Policy.score_floor),
  every target's floor comes first (block/predictor/floor.py: O(log n) from the prepared state), then
  best first in ascending floor order until the best score so far beats the next floor: a target
  reached is first bounded again from its checkpoint (block/predictor/checkpoint.py: the queue ahead
  replayed once per state, a much tighter floor), or, without a queue beyond its slots, by its forecast
  read off its recorded run (Forecaster.read_floor: the tightest floor, kept for the forecast), and goes
  back in line with that, and is forecast when reached again. From READY_ORDER_MIN targets on, not even
  every floor is computed: the targets are walked in the order of a floor prepared once per state
  (ready_order.py; from the recorded run where the state has one and no checkpoint), and those never
  reached are never looked at. Scores and floors are compared on a nanosecond grid (the policy's
  `on_grid`): a read and a replay of one forecast differ in their last bits. Idle instances are not
  walked: one forecast per kind stands for them all (ready_order.py), and so does it for an instance
  whose requests all finish before the new one arrives (InstanceTracker.idle_by: its forecast is an
  idle one's, bit for bit). The others cannot win; the policy gets the forecast ones only. If a
  forecast is missing, every target is handed on (the fallback chooses among all, as without pruning).
When forecasts are missing, `missing_reason` says why (budget, deadline, error; the router adds sidecar)
and shedding for the budget is logged as a warning at most once a minute: a router that sheds is, in
effect, not doing Block, and the operator must hear of it.
The simulator runs in virtual time: no deadline and no budget, the same code otherwise.

Sidecar forecasts are queried concurrently and awaited up to the deadline.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

from block.fleet.prefix_holders import PrefixHolders
from block.fleet.ready_order import ReadyOrder
from block.fleet.tracker import InstanceTracker, added_delay_for
from block.policies import Candidates, Policy
from block.predictor.floor import MARGIN
from block.request import Forecast, RoutingRequest

FORECAST_SHARE = 0.5  # of the event loop's time, at most, for in-process forecasts
RESERVE_DEADLINES = 20  # the budget's reserve for bursts, in deadlines (100 ms by default)
SHED_WARNING_EVERY_S = 60.0
READY_ORDER_MIN = 32  # targets from which a decision walks them in ReadyOrder (below: every floor)
MISSING_REASONS = ("budget", "deadline", "sidecar", "error")  # why a decision went without forecasts


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
        prune: bool = True,
        holders: PrefixHolders | None = None,
    ) -> None:
        """`prune`: skip the targets that cannot win (see `candidates`) when the policy allows it.
        `holders`: where prompts' first blocks went, when every request the instances run is recorded
        there (prefix_holders.py): a walk then only reaches the instances that hold some of a request's
        prompt as far as its affinity tolerance (every instance, without it)."""
        self.policy = policy
        self.added_delay = added_delay_for(policy)
        self.deadline_s = deadline_s
        self.budget = budget
        self.horizon_s = horizon_s if self.added_delay == "none" else None
        self.log = log or logging.getLogger(__name__)
        self.prune = prune
        self.holders = holders
        self.capped = 0  # forecasts stopped at the horizon
        self.made = 0  # forecasts asked for (in process)
        self.pruned = 0  # targets not forecast because their floor could not win
        self.walked = 0  # targets reached in a walk of the ready order (each bounded, maybe forecast)
        self.missing_reason: str | None = None  # of the latest call, when a forecast was missing
        self._warned_at = float("-inf")
        self._ready = ReadyOrder()

    def candidates(
        self,
        request: RoutingRequest,
        views: Sequence[InstanceTracker],
        now: float,
        started: float | None = None,
    ) -> Candidates:
        """This decision's candidates: the targets that may win, with their forecasts (branch and
        bound over the floors); every target with `in_process`'s forecasts when the policy's score has
        no floor, a target has none, or a forecast is missing."""
        if not self.prune or len(views) < 2 or self.policy.score_floor(0.0, views[0], request) is None:
            return Candidates(views, self.in_process(request, views, now, started))
        # the targets not yet reached, in ascending order of a floor cheaper still (ready_order.py); or
        # every target's floor first, where that one does not apply
        ahead, own, own_plain, own_steps = self._ready_walk(request, views, now)
        line: list[tuple[tuple[float, ...], bool]] = []  # (floor key, bounded from the checkpoint)
        if ahead is None:
            keys = self._floors(request, views, now)
            if keys is None:
                return Candidates(views, self.in_process(request, views, now, started))
            line = [(k, False) for k in keys]
            heapq.heapify(line)
            ahead = []
        self.missing_reason = None
        started, deadline = self._start(started)
        if started is False:
            return Candidates(views, [None] * len(views))
        score, floor_of, got = self.policy.forecast_score, self.policy.score_floor, {}
        best: tuple[float, int, int] | None = None
        refused: list[str] = []
        idle: dict[tuple[object, ...], Forecast] = {}  # one forecast for all alike idle instances
        refine = self.horizon_s is None  # (the checkpoint's floor has no horizon)
        loose: list[int] = []  # reached in the order by a bound without a checkpoint
        reached = 0

        def forecast_of(v: InstanceTracker, kind: tuple[object, ...] | None) -> Forecast | None:
            """v's forecast (None: missing); one for each idle kind (`kind`), shared by all alike."""
            f = idle.get(kind) if kind is not None else None
            if f is None:
                f = None if self._late(deadline) else self._one(v, request, now, deadline, refused)
                if kind is not None and f is not None:
                    idle[kind] = f
            return f

        hashed = bool(request.prefix_hashes)
        # where the policy's key depends on what each instance has cached of the request (block's
        # affinity): the instances that hold some of it, in the order, when known (None: any may)
        holding = self._holding(request, views, own_steps) if hashed and ahead else None
        held = None if holding is None else {i for _, i in holding}
        # the idle instances, out of the order (ready_order.py): one forecast for each kind, and only the
        # one that wins the tie among them takes part (and every one that the policy may prefer within
        # its tolerance, for a request with a prefix identity: those that hold some of it, or every one
        # where that is not known)
        for kind, members in self._ready.idle.items() if ahead else ():
            i = min(members)  # the first, unless another has fewer in flight (an idle one seldom has any)
            if views[i].in_flight:
                i = min(members, key=lambda j: (views[j].in_flight, j))
            f = forecast_of(views[i], kind)
            if f is None:
                return self._missing(request, views, got, started, refused)
            alike = (i,) if not hashed else members if held is None else {i, *(members & held)}
            for j in alike:
                views[j].last_forecast = got[j] = f
            key = (*score(f, views[i]), i)
            if best is None or key < best:
                best = key  # type: ignore[assignment]
        front: tuple[float, ...] | None = None
        front_of = -1  # the `reached` that `front` is for
        bare = replace(request, prefix_hashes=()) if holding is not None else request
        # knowing which hold some of it, those that do not find none of it cached: their own part counts
        # the whole prompt (the holders', every block of it cached)
        own_rest = own_plain if holding is not None else own
        h = 0  # the first of `holding` not reached
        while True:
            if reached < len(ahead) and ahead[reached][0] != float("inf"):  # the next one not reached yet
                if front_of != reached:  # what it and every later one cannot beat
                    lower = ahead[reached][0] - now + own_rest
                    lower -= abs(lower) * MARGIN
                    # as the policy's key, for this instance and every later one: where that key
                    # depends on what each has cached of the request, the one that holds whatever
                    # they have; or, knowing which hold some, the next one that holds nothing and the
                    # next one that holds some, whichever is lower
                    scaled = floor_of(
                        lower, views[ahead[reached][1]], None if hashed and holding is None else bare
                    )
                    if holding is not None and scaled is not None:
                        while h < len(holding) and holding[h] < ahead[reached]:
                            h += 1
                        if h < len(holding) and holding[h][0] != float("inf"):
                            lower_h = holding[h][0] - now + own
                            lower_h -= abs(lower_h) * MARGIN
                            holder_floor = floor_of(lower_h, views[holding[h][1]], None)
                            scaled = None if holder_floor is None else min(scaled, holder_floor)
                    if scaled is None:  # no floor after all: as without pruning
                        return Candidates(views, self.in_process(request, views, now, started))
                    front, front_of = (scaled[0],), reached
            else:
                front = None
            if line and (front is None or line[0][0] < front):
                key, refined = line[0]
            elif front is not None:
                if best is not None and best < front:
                    break  # this one and every later one: e2e_s above the best score
                ready_at, i = ahead[reached]
                reached += 1
                v = views[i]
                # done with all it has before the request gets there (its bound says it may be): an idle
                # instance's forecast, known exactly where one of its kind was forecast
                kind = v.idle_by(request, now, deadline) if ready_at <= now else None
                if kind is not None:
                    f = forecast_of(v, kind)
                    if f is None:
                        return self._missing(request, views, got, started, refused)
                    key = (*score(f, v), i)
                    if request.prefix_hashes or best is None or key < best:
                        v.last_forecast = got[i] = f
                        if best is None or key < best:
                            best = key  # type: ignore[assignment]
                    continue
                if not self._ready.tight[i]:
                    loose.append(i)
                tighter = self._tighter(v, request, now, deadline, i, True)  # builds its checkpoint
                if tighter is not None:
                    heapq.heappush(line, (tighter, True))
                    continue
                try:
                    e2e = v.e2e_floor(request, now, self.horizon_s)
                except ValueError:  # the request does not fit there: let in_process say so
                    e2e = None
                floor = None if e2e is None else floor_of(e2e, v, request)
                if floor is None:  # no floor after all: as without pruning (its time counts there)
                    return Candidates(views, self.in_process(request, views, now, started))
                heapq.heappush(line, ((*floor, i), False))
                continue
            else:
                break
            if best is not None and best < key:
                break  # this one and every later one score at least their floor: above the best
            heapq.heappop(line)
            i = int(key[-1])
            v = views[i]
            if refine and not refined:
                tighter = self._tighter(v, request, now, deadline, i, bool(ahead))
                if tighter is not None and tighter > key:
                    heapq.heappush(line, (tighter, True))
                    continue
            f = forecast_of(v, v.idle_signature(now))
            if f is None:
                return self._missing(request, views, got, started, refused)
            v.last_forecast = got[i] = f
            key = (*score(f, v), i)
            if best is None or key < best:
                best = key  # type: ignore[assignment]
        # with the checkpoint built, its place in the order is tight from now on (updated by `settle`,
        # or the next decision: the bound it has is still a bound)
        self._ready.stale.update(loose)
        self._spent(started)
        self.pruned += len(views) - len(got)
        self.walked += reached
        order = sorted(got)
        return Candidates([views[i] for i in order], [got[i] for i in order])

    def settle(self, views: Sequence[InstanceTracker], now: float) -> None:
        """After a decision, off its path (the router calls it once the request is on its way): bring
        the order the next decision walks up to date with the states that changed since (the instance
        just routed to: its forecaster rebuilt, its checkpoint extended, its bound), so that the next
        decision only checks the versions. Optional: a decision does it itself when not done. Nothing
        where decisions do not walk that order."""
        if self.prune and self.horizon_s is None and len(views) >= READY_ORDER_MIN and self._ready.groups:
            started = time.perf_counter()
            self._ready.order(views, now, 1)
            self._spent(started)  # forecasting work all the same: it counts against the loop's share

    def prepare(self, views: Sequence[InstanceTracker]) -> None:
        """Prepare each target's state for the decisions to come (its checkpoint: a replay of its queue,
        once per state), so that the first decisions find them bounded tightly. Optional: a decision
        prepares the targets it reaches."""
        for v in views:
            v.prepare()

    def _missing(
        self,
        request: RoutingRequest,
        views: Sequence[InstanceTracker],
        got: dict[int, Forecast],
        started: float | None | bool,
        refused: list[str],
    ) -> Candidates:
        """A forecast is missing (late or failed): every target is handed on with what was forecast, and
        the policy's fallback chooses among all."""
        self._spent(started)
        self.missing_reason = self.missing_reason or "error"
        if refused:
            self._log_unfit(request, refused)
        return Candidates(views, [got.get(j) for j in range(len(views))])

    def _holding(
        self, request: RoutingRequest, views: Sequence[InstanceTracker], own_steps: int
    ) -> list[tuple[float, int]] | None:
        """The places in the walk's order of the targets that hold some of the request's prompt,
        ascending; None where that is not known (no index). The index's instances that hold nothing of
        it any more are forgotten there (prefix_holders.py)."""
        holders = self.holders
        if holders is None:
            return None
        first, index_of, places = request.prefix_hashes[0], self._ready.index_of, []
        for instance_id in holders.may_hold(first):
            i = index_of.get(instance_id)
            if i is None:
                continue  # not a target of this decision
            if views[i].cached_prefix_blocks(request):
                places.append(self._ready.place(i, own_steps))
            else:
                holders.forget(first, instance_id)
        places.sort()
        return places

    def _ready_walk(
        self, request: RoutingRequest, views: Sequence[InstanceTracker], now: float
    ) -> tuple[list[tuple[float, int]] | None, float, float, int]:
        """(the targets in ascending ready_at, the request's own part of their floor: the least over
        the profiles and configurations in use, with its whole prompt found cached and with none of it,
        and the fewest steps of its own it takes); (None, 0, 0, 0) where that floor does not apply: a
        horizon, a configuration it does not fit."""
        if self.horizon_s is not None or len(views) < READY_ORDER_MIN:
            return None, 0.0, 0.0, 0
        groups = self._ready.groups
        if not groups:
            self._ready.order(views, now, 1)  # the first time: finds the groups
        own, plain, own_steps = float("inf"), float("inf"), 1 << 62
        prompt = request.prompt_tokens
        # (without a prefix identity, or not knowing who holds it, the two parts are the same: one suffices)
        apart = bool(request.prefix_hashes) and self.holders is not None
        for steps, cfg in groups.values():
            if not cfg.fits(prompt):
                return None, 0.0, 0.0, 0
            own = min(own, steps.own_s(request, cfg))
            if apart:
                plain = min(plain, steps.own_s(request, cfg, cached=False))
            own_steps = min(own_steps, steps.own_steps(request, cfg))
        if own == float("inf"):
            return None, 0.0, 0.0, 0
        return self._ready.order(views, now, own_steps), own, plain if apart else own, own_steps

    def _tighter(
        self,
        view: InstanceTracker,
        request: RoutingRequest,
        now: float,
        deadline: float | None,
        i: int,
        prepare: bool,
    ) -> tuple[float, int, int] | None:
        """The policy's floor key of `view` from its checkpoint (`prepare`: build it in any case); None
        when there is none (a failure here is the forecast's to report)."""
        try:
            e2e = view.checkpoint_floor(request, now, deadline, prepare)
        except Exception:
            return None
        key = None if e2e is None else self.policy.score_floor(e2e, view, request)
        return None if key is None else (*key, i)

    def _floors(
        self, request: RoutingRequest, views: Sequence[InstanceTracker], now: float
    ) -> list[tuple[float, int, int]] | None:
        """Each target's floor of the policy's score, with its position last (ties go to the first,
        as in the policy's min); None when the score has no floor or a target has none."""
        if len(views) < 2:
            return None
        floor_of, horizon = self.policy.score_floor, self.horizon_s
        keys = []
        try:
            for i, v in enumerate(views):
                e2e = v.e2e_floor(request, now, horizon)
                key = None if e2e is None else floor_of(e2e, v, request)
                if key is None:
                    return None
                keys.append((*key, i))
        except ValueError:  # the request does not fit somewhere: let in_process say so
            return None
        return keys

    def in_process(
        self,
        request: RoutingRequest,
        views: Sequence[InstanceTracker],
        now: float,
        started: float | None = None,
    ) -> list[Forecast | None]:
        """Each view's forecast for `request` routed at `now` (the trackers' clock). `started`: when the
        decision began (time.perf_counter()), from which the deadline and the budget count."""
        self.missing_reason = None
        started, deadline = self._start(started)
        if started is False:
            return [None] * len(views)
        out: list[Forecast | None] = []
        refused: list[str] = []
        for v in views:
            if self._late(deadline):  # out of time: the rest unknown
                out.append(None)
                continue
            f = self._one(v, request, now, deadline, refused)
            if f is None and self.missing_reason is None:
                self.missing_reason = "error"
            out.append(f)
        if refused:
            self._log_unfit(request, refused)
        self._spent(started)
        return out

    def _start(self, started: float | None) -> tuple[float | None | bool, float | None]:
        """(when the decision began, its deadline); (False, None) when the budget sheds it."""
        budget, deadline = self.budget, None
        if started is None and (budget is not None or self.deadline_s is not None):
            started = time.perf_counter()
        if budget is not None and started is not None and not budget.available(started):
            # forecasts took their share of the loop lately: shed them, and say so now and then
            self.missing_reason = "budget"
            if started - self._warned_at >= SHED_WARNING_EVERY_S:
                self._warned_at = started
                self.log.warning(
                    "forecasts shed: they used more than %.0f%% of the event loop lately, so decisions "
                    "go without them (the policy's fallback rule chooses) until the budget refills; "
                    'see block_router_fallbacks_total{reason="budget"}',
                    100 * FORECAST_SHARE,
                )
            return False, None
        if self.deadline_s is not None and started is not None:
            deadline = started + self.deadline_s
        return started, deadline

    def _late(self, deadline: float | None) -> bool:
        if deadline is not None and time.perf_counter() > deadline:
            self.missing_reason = "deadline"
            return True
        return False

    def _spent(self, started: float | None | bool) -> None:
        if self.budget is not None and isinstance(started, float):
            self.budget.spend(time.perf_counter() - started)

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
        self.missing_reason = None
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
                self.missing_reason = "sidecar"
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
        self.made += 1
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
        if f is None and deadline is not None and time.perf_counter() > deadline:
            self.missing_reason = "deadline"
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
