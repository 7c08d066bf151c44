"""Snapshot freshness: trackers see each replica as the live router would, as of the latest refresh tick.

The live router polls every instance every `refresh_s` (20 ms) and gets the engine's state at that moment:
the queue as of the step in flight's start, `now` = the poll time and the step in flight's end. At a
routing decision at time t its view of an instance is therefore the state at the latest tick
k * refresh_s <= t, plus what the router itself routed since (the tracker folds those in as pending).
Polling every replica every tick would cost more than the whole simulation, so snapshots are taken
lazily and only when a decision can see them:

- at a decision in tick k, a tracker that has not observed tick k gets the replica's state at the tick;
- that state is the current one unless the replica changed since the tick started; so before the first
  change of a replica within a tick, if a decision is still due in that tick, the state is captured.

Observing a tick's snapshot late must not undo what the router learnt after the tick: a request that
finished after the tick is still in that snapshot, and the tracker, had it observed the snapshot on time,
would have removed it when told of the finish. So finishes since the tick are told again after observing.

Ticks are half-open [k * refresh_s, (k + 1) * refresh_s): a change at exactly a tick time is after the tick.
The rule is tested against literal polling (SimConfig.refresh = "poll") in tests/sim/test_freshness.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from block.replica import Replica, Snapshot


class Observer(Protocol):
    def observe(self, snapshot: Snapshot, at: float, step_end: float | None = None) -> None: ...

    def on_finished(self, request_id: str, at: float) -> None: ...


StepEnd = Callable[[int], "float | None"]  # end of replica r's step in flight, None when idle


class SnapshotFeed:
    def __init__(
        self, replicas: Sequence[Replica], trackers: Sequence[Observer], refresh_s: float, step_end: StepEnd
    ) -> None:
        self.replicas = replicas
        self.trackers = trackers
        self.refresh_s = refresh_s
        self.step_end = step_end
        n = len(replicas)
        self.observed_tick = [-1] * n  # the tick each tracker has last observed
        self.changed_tick = [-1] * n  # the tick of each replica's latest change
        self.captured: list[tuple[int, Snapshot, float | None] | None] = [None] * n
        self.next_decision_tick = -1  # tick of the next routing decision (-1: none left)
        self.snapshots_taken = 0
        self.finished: list[list[tuple[str, float]]] = [[] for _ in range(n)]  # since the last refresh

    def tick(self, t: float) -> int:
        return int(t / self.refresh_s)

    def poll(self, r: int, tick: int) -> tuple[Snapshot, float | None]:
        """What replica r's engine would answer to a poll at `tick` if it has not changed since."""
        snap = self.replicas[r].snapshot()
        snap.now = tick * self.refresh_s  # the engine reports its clock at the poll, as live
        self.snapshots_taken += 1
        return snap, self.step_end(r)

    def before_change(self, r: int, t: float) -> None:
        """Replica `r` is about to change at time `t` (a step ends, a request arrives)."""
        k = int(t / self.refresh_s)
        if self.changed_tick[r] == k:
            return  # not the first change in this tick: the tick's state was handled already
        self.changed_tick[r] = k
        if k == self.next_decision_tick and self.observed_tick[r] != k:
            self.captured[r] = (k, *self.poll(r, k))

    def on_finished(self, r: int, request_id: str, at: float) -> None:
        self.finished[r].append((request_id, at))

    def refresh(self, indices: Sequence[int] | range, t: float) -> None:
        """Bring the trackers of `indices` to the latest tick before a decision at time `t`."""
        k = int(t / self.refresh_s)
        at = k * self.refresh_s
        observed, captured, trackers = self.observed_tick, self.captured, self.trackers
        for r in indices:
            if observed[r] == k:
                continue
            observed[r] = k
            cap = captured[r]
            if cap is not None and cap[0] == k:
                _, snapshot, step_end = cap
            else:  # no change since the tick started: the current state is the tick's
                snapshot, step_end = self.poll(r, k)
            tracker = trackers[r]
            tracker.observe(snapshot, at, step_end)
            finished = self.finished[r]
            for request_id, when in finished:
                if when >= at:
                    tracker.on_finished(request_id, when)
            finished.clear()
