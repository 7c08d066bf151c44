"""Admission in the simulator: the router's hold-or-reject stage (block/admission), in virtual time.

The cluster asks `arrive` at each arrival instead of routing at once. A request whose target some
instance's forecast meets is routed there (only such instances are candidates); otherwise it is held
(`queue`, bounded, lower priorities shed first) or rejected (`reject`, recorded as HTTP 429). Held
requests are re-checked whenever the state the forecasts read changes: a request finishes, a new
snapshot tick starts (Cluster.run_holding_until calls `recheck`) or a request arrives, in the queue's
order (HeldQueue.attempts: a lower priority never overtakes a higher one). A request still held at its
deadline is rejected: it can no longer meet its target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from block.admission import AdmissionSettings, Gate, Held, HeldQueue, Target, Verdict
from block.bench.metrics import stats
from block.request import RoutingRequest

HELD_TOO_LONG = "held past its target: no instance could meet it in time"
NOT_ADMITTED = "no instance's forecast meets the target"
SHED = "shed: the held-request queue is full of requests of higher or equal rank"


@dataclass(slots=True)
class Arrival:
    index: int
    request: RoutingRequest


class SimAdmission:
    def __init__(self, settings: AdmissionSettings) -> None:
        self.settings = settings
        self.gate = Gate()
        self.queue = HeldQueue(settings.max_held if settings.holds else 0)
        self.priorities: list[int] = []
        self.rejected: dict[int, str] = {}  # request index -> why
        self.held_s: dict[int, float] = {}  # request index -> how long it was held (placed ones)
        self.was_held: set[int] = set()
        self.counts: dict[str, dict[int, int]] = {"admitted": {}, "held": {}, "rejected": {}}
        # Places a request on replica r at a time: (index, request, time, replica, choice, candidates).
        self.place: Callable[..., None] = lambda *a: None
        self.route: Callable[[RoutingRequest, float, Target], Any] = lambda *a: None

    def target_for(self, index: int, arrived: float) -> Target:
        s = self.settings
        priority = self.priorities[index] if self.priorities else 0
        return Target(arrived, s.ttft_s, s.e2e_s, priority)

    def arrive(self, index: int, request: RoutingRequest, now: float) -> None:
        target = self.target_for(index, now)
        self.gate.saw(target.priority, request.prompt_tokens)
        if len(self.queue):  # an arrival is an event too: the held requests go first
            self.recheck(now)
        routed = self.route(request, now, target)
        if isinstance(routed, Verdict):
            if self.settings.holds:
                self._hold(Arrival(index, request), target, routed.retry_after_s)
            else:
                self._reject(index, target, NOT_ADMITTED)
            return
        self._count("admitted", target)
        self.place(index, request, now, *routed)

    def recheck(self, now: float) -> None:
        """Place what can be placed now, in order; reject what can no longer meet its target."""
        queue = self.queue
        for h in queue.expire(now):
            self._reject(h.item.index, h.target, HELD_TOO_LONG)

        def try_place(h: Held) -> bool:
            routed = self.route(h.item.request, now, h.target)
            if isinstance(routed, Verdict):
                h.retry_after_s = routed.retry_after_s
                return False
            queue.remove(h)  # before placing: the placement may re-enter (a request finishes)
            index = h.item.index
            self.held_s[index] = now - h.target.arrived
            self._count("admitted", h.target)
            self.place(index, h.item.request, now, *routed)
            return True

        queue.place_in_order(try_place)

    def close(self) -> None:
        """The run is over: whatever is still held never got a place."""
        for h in list(self.queue):
            self.queue.remove(h)
            self._reject(h.item.index, h.target, HELD_TOO_LONG)

    def _hold(self, arrival: Arrival, target: Target, retry_after_s: int) -> None:
        self._count("held", target)
        self.was_held.add(arrival.index)
        shed = self.queue.offer(Held(target, arrival, retry_after_s))
        if shed is not None:
            self._reject(shed.item.index, shed.target, SHED)

    def _reject(self, index: int, target: Target, why: str) -> None:
        self.rejected[index] = why
        self._count("rejected", target)

    def _count(self, what: str, target: Target) -> None:
        by = self.counts[what]
        by[target.priority] = by.get(target.priority, 0) + 1

    def summary(self) -> dict[str, Any]:
        """Admitted / held / rejected per priority, and the time held of the requests placed."""
        return {
            "mode": self.settings.mode,
            **{k: {str(p): n for p, n in sorted(v.items())} for k, v in self.counts.items()},
            "held_s": stats(self.held_s.values()),
        }
