"""A fleet's instances in the order of their cheapest floor, kept from one decision to the next.

A decision over a thousand instances cannot afford even one floor per instance (a few microseconds
each). Every instance's floor has a part that no candidate changes but through its number of steps
(InstanceTracker.ready_at: when its queue lets a candidate's own work start, at the soonest, plus what
the others' decodes cost during that many steps) and a part that depends only on the candidate and the
profile (StepFloor.own_s). So the fan-out (block/fleet/forecasts.py) walks the instances in ascending
`ready_at` for the largest of a few step counts (STEP_BUCKETS) that the candidate reaches, and stops as
soon as the next one's ready_at plus the candidate's own part cannot beat the best forecast so far:
the instances behind it are never looked at.

The bound is tight once the instance's checkpoint is built (block/predictor/checkpoint.py: its queue
replayed once per state), loose before, from the snapshot's floor. A decision builds the checkpoint of
each instance it reaches (a replay, once per state; a request routed there extends it cheaply), so the
instances that can compete are bounded tightly from then on, and those that cannot are never replayed.

The orders only change where an instance's state does (its tracker's `version`: a snapshot, a request
routed or finished), so between decisions they are updated in place, one changed instance at a time (a
decision routes one request, so usually one); where the list of instances itself changed, they are
rebuilt. Updating one re-prepares its state (its forecaster, its checkpoint extended, the floor there:
about 0.2 ms); the router does that after the decision, once the request is on its way
(Forecasts.settle), so that the next decision finds the order up to date and only checks the versions.
An instance without the bound (no forecasts, calibration) sorts first, at minus infinity: it is always
reached. With the prefix cache modelled an idle instance stays in the orders: what it holds cached makes
its forecasts its own.

An idle instance (nothing queued or running, no step in flight) is not in the orders but in `idle`, with
those alike (InstanceTracker.idle_signature): they all give the same forecast, so a decision forecasts one
of each kind and only the one that wins the tie among them (fewest in flight, then first) takes part. On
a lightly loaded fleet most instances are idle, and walking them one by one cost a decision over 100
instances 100 forecasts.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from block.fleet.tracker import InstanceTracker, latest_version
from block.predictor.floor import StepFloor
from block.replica.config import ReplicaConfig

STEP_BUCKETS = (1, 8, 32, 64, 128, 192, 256, 384, 512, 1024)  # candidate steps (prefill chunks + decodes)
REBUILD_SHARE = 8  # above 1 / REBUILD_SHARE of the instances changed, sort again (the rest's bounds kept)


class ReadyOrder:
    def __init__(self) -> None:
        self._views: list[InstanceTracker] = []
        self._versions: list[int] = []
        self._seen = -1  # latest_version() when the versions were last compared
        self._ready: list[list[float]] = []  # per instance, as in the views: ready_at per bucket
        self.tight: list[bool] = []  # per instance: its ready_at is from its checkpoint
        self.stale: set[int] = set()  # instances whose bound may have tightened (a checkpoint built)
        self._orders: list[list[tuple[float, int]]] = []  # per bucket: (ready_at, index), ascending
        # what own_s is computed with, one (StepFloor, configuration) per distinct result (the rates,
        # the step's token budget, the room for a request, whether it caches blocks of that size)
        self.groups: dict[tuple[float | int | bool, ...], tuple[StepFloor, ReplicaConfig]] = {}
        self.idle: dict[tuple[object, ...], set[int]] = {}  # the idle instances, by idle_signature
        self._idle_of: list[tuple[object, ...] | None] = []  # per instance: its idle signature
        self.index_of: dict[str, int] = {}  # instance id -> its index among the views

    def order(self, views: Sequence[InstanceTracker], now: float, own_steps: int) -> list[tuple[float, int]]:
        """(ready_at, index) of every view, ascending, valid for a candidate of at least `own_steps`
        steps; minus infinity where there is no bound."""
        listed, latest = list(views), latest_version()
        if listed != self._views:  # (the same trackers: compared by identity, in C)
            self._views, self._seen = listed, latest
            self.index_of = {v.id: i for i, v in enumerate(views)}
            self._versions = [v.version for v in views]
            self._rebuild(views, now)
        else:
            if latest != self._seen:  # some tracker changed (here or elsewhere): which?
                self._seen = latest
                versions = [v.version for v in views]
                if versions != self._versions:
                    old = self._versions
                    self.stale.update(i for i, v in enumerate(versions) if v != old[i])
                    self._versions = versions
            if self.stale:
                if len(self.stale) * REBUILD_SHARE > len(views):
                    self._rebuild(views, now, self.stale)
                else:
                    for i in sorted(self.stale):
                        self.refresh(i, views[i], now)
                self.stale.clear()
        return self._orders[bisect.bisect_right(STEP_BUCKETS, own_steps) - 1]

    def place(self, i: int, own_steps: int) -> tuple[float, int]:
        """View `i`'s place in the order `order(..., own_steps)` returned: (ready_at, i)."""
        return self._ready[i][bisect.bisect_right(STEP_BUCKETS, own_steps) - 1], i

    def refresh(self, i: int, view: InstanceTracker, now: float) -> None:
        """Recompute view `i`'s places (its bound may have tightened: a checkpoint was built)."""
        ready, self.tight[i] = self._ready_at(view, now)
        self._set_idle(i, ready, view, now)
        for order, old, new in zip(self._orders, self._ready[i], ready, strict=True):
            del order[bisect.bisect_left(order, (old, i))]
            bisect.insort(order, (new, i))
        self._ready[i] = ready

    def _rebuild(self, views: Sequence[InstanceTracker], now: float, changed: set[int] | None = None) -> None:
        """Sort again; the bounds of the `changed` instances only (None: every one) computed again (a
        bound costs much more than its place in a sort)."""
        if changed is None:
            got = [self._ready_at(v, now) for v in views]
            self._ready = [r for r, _ in got]
            self.tight = [t for _, t in got]
            self.idle, self._idle_of = {}, [None] * len(views)
            changed = set(range(len(views)))
        else:
            for i in changed:
                self._ready[i], self.tight[i] = self._ready_at(views[i], now)
        for i in changed:
            self._set_idle(i, self._ready[i], views[i], now)
        self.stale.clear()
        self._orders = [
            sorted((r[b], i) for i, r in enumerate(self._ready)) for b in range(len(STEP_BUCKETS))
        ]

    def _set_idle(self, i: int, ready: list[float], view: InstanceTracker, now: float) -> None:
        """File view `i` under its idle signature (its places then at plus infinity: never walked), or
        under none. Only where it has the bound (ready_at: no calibration) and no cache is modelled."""
        old = self._idle_of[i]
        new = None if ready[0] == float("-inf") else view.idle_signature(now)
        if new is not None:
            ready[:] = [float("inf")] * len(ready)
        if old == new:
            return
        if old is not None:
            self.idle[old].discard(i)
            if not self.idle[old]:
                del self.idle[old]
        if new is not None:
            self.idle.setdefault(new, set()).add(i)
        self._idle_of[i] = new

    def _ready_at(self, view: InstanceTracker, now: float) -> tuple[list[float], bool]:
        got = view.ready_at(now, STEP_BUCKETS)
        if got is None:
            return [float("-inf")] * len(STEP_BUCKETS), False
        ready, tight = got
        group = view.own_floor()
        if group is not None:
            st, cfg = group
            key = (st.step_s, st.per_seq_s, st.kv_s, st.pair_s, st.max_tokens, cfg.room)
            self.groups.setdefault((*key, cfg.enable_prefix_caching, cfg.block_size), group)
        return ready, tight
