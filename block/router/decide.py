"""One routing decision: filter the instances, forecast the policy's targets, let it choose.

The filter stage (block/fleet/filters.py) keeps the instances in rotation that this request has not
tried yet; the forecasts (block/fleet/forecasts.py) come from each instance's sidecar when it has one,
else from its tracker in this process, within the decision's deadline and the forecast budget. They are
this decision's own (`Candidates`): concurrent decisions, which may interleave while sidecars answer,
never see each other's.

What a decision changes (the routed instance's state) and what the pollers change (snapshots, finished
requests) is prepared for the next decision off the decisions' path (`settle_soon`: once the routed
request is on its way, or the snapshot is in), so that a decision mostly finds its instances prepared.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass

from block.admission import Gate, Target, Verdict
from block.admission.gate import admitted_candidates
from block.fleet.filters import InRotation, Untried, apply_filters
from block.fleet.forecasts import FORECAST_SHARE, RESERVE_DEADLINES, ForecastBudget, Forecasts
from block.fleet.tracker import InstanceTracker
from block.policies import Candidates, Policy
from block.request import Forecast, RoutingRequest
from block.router.decision_log import DecisionLog
from block.router.instance import Instance
from block.router.instance_pool import InstancePool
from block.router.metrics import RouterMetrics

log = logging.getLogger("block.router.decision")


class NoInstance(Exception):
    """No instance is in rotation (or every one was already tried)."""


class NotAdmitted(Exception):
    """Admission: no instance's forecast meets the request's target (the gate's verdict says when to
    try again)."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__("no instance meets the target")
        self.verdict = verdict


@dataclass(slots=True)
class Decision:
    instance: Instance
    forecast: Forecast | None
    fallback: bool
    decided_at: float  # time.monotonic() at the decision
    target: Target | None = None  # what admission held it to (None: admission off)
    routed: bool = False  # already folded into the instance's tracker (placed from the held queue)


class Decider:
    def __init__(self, policy: Policy, pool: InstancePool, metrics: RouterMetrics, deadline_s: float) -> None:
        self.policy = policy
        self.pool = pool
        self.metrics = metrics
        self._debug = log.isEnabledFor(logging.DEBUG)
        self.budget = ForecastBudget(FORECAST_SHARE, RESERVE_DEADLINES * deadline_s)
        self.forecasts = Forecasts(policy, deadline_s, self.budget, log=log)
        self.in_rotation = InRotation(lambda: pool.routable_ids)
        self.decision_log: DecisionLog | None = None  # --decision-log: what each decision saw
        self.gate = Gate()  # admission's rule, in front of the choice (used when a target is given)
        self._walked: list[InstanceTracker] = []  # the targets of the latest pruned decision
        self._settling = False

    @property
    def deadline_s(self) -> float:
        assert self.forecasts.deadline_s is not None
        return self.forecasts.deadline_s

    @deadline_s.setter
    def deadline_s(self, seconds: float) -> None:
        self.forecasts.deadline_s = seconds

    async def decide(
        self,
        request: RoutingRequest,
        exclude: Collection[Instance] = (),
        target: Target | None = None,
        held: bool = False,
    ) -> Decision:
        """With a `target` (admission), only instances whose forecast meets it are candidates, and
        NotAdmitted is raised when none does (`held`: a held request, never placed without forecasts)."""
        started = time.perf_counter()
        pool = self.pool.instances
        every: list[InstanceTracker] = [i.tracker for i in pool.values() if i.tracker is not None]
        views = list(apply_filters((self.in_rotation, Untried({i.id for i in exclude})), every))
        if not views:
            raise NoInstance
        instances = {v.id: pool[v.id] for v in views}  # an instance removed while sidecars answer is kept
        now = time.monotonic()
        policy = self.policy
        wants = policy.wants_forecasts
        if wants or target is not None:
            targets = list(policy.forecast_targets(views)) if wants else views
            sidecars = [instances[v.id].sidecar for v in targets]
            if any(s is not None for s in sidecars):
                forecasts = await self.forecasts.with_sidecars(
                    request, targets, sidecars, started, time.monotonic
                )
                candidates = Candidates(targets, forecasts)
            elif target is not None:  # the gate judges every target's forecast: none is pruned
                candidates = Candidates(targets, self.forecasts.in_process(request, targets, now, started))
            else:  # pruned to the targets that may win when the policy allows it
                candidates = self.forecasts.candidates(request, targets, now, started)
                self._walked = targets
            assert candidates.forecasts is not None
            forecasts = list(candidates.forecasts)
            missed = sum(f is None for f in forecasts)
            if missed:
                self.metrics.forecasts_missed.inc(missed)
            if not wants:
                candidates = Candidates(targets)
            if target is not None:
                verdict = self.gate.verdict(
                    target, request.prompt_tokens, targets, forecasts, time.monotonic(), held
                )
                if not verdict.admit:
                    raise NotAdmitted(verdict)
                candidates = admitted_candidates(targets, forecasts, verdict, wants)
        else:
            candidates = Candidates(views)
        choice = policy.choose(request, candidates, now)
        inst = instances[choice.instance.id]
        forecast = candidates.forecast_for(choice.instance)
        reason = (self.forecasts.missing_reason or "error") if choice.fallback else None
        self.metrics.decided(policy.wants_forecasts, choice.fallback, reason)
        elapsed = time.perf_counter() - started
        self.metrics.decision_seconds.observe(elapsed)
        self.metrics.routed(inst.id)
        if self.decision_log is not None:
            self.decision_log.decided(request, candidates, inst.id, choice.fallback, now)
        if self._debug:
            log.debug(
                "decision policy=%s instance=%s prompt=%d expected=%d candidates=%d fallback=%s "
                "forecast_e2e_s=%s decision_us=%.0f",
                policy.name,
                inst.id,
                request.prompt_tokens,
                request.expected_output_tokens,
                len(views),
                choice.fallback,
                None if forecast is None else round(forecast.e2e_s, 4),
                elapsed * 1e6,
            )
        return Decision(inst, forecast, choice.fallback, now, target)

    def settle_soon(self) -> None:
        """Prepare what changed for the next decision (Forecasts.settle) once the event loop has run
        what is ready now (the routed request's send first); one pass for any number of changes."""
        if self._settling or not self._walked:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not in the router's loop: the next decision does it
            return
        self._settling = True
        loop.call_soon(self._settle)

    def _settle(self) -> None:
        self._settling = False
        self.forecasts.settle(self._walked, time.monotonic())
