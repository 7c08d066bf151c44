"""The requests admission holds: bounded, in order of priority (highest first), then deadline.

`offer` adds a request; when the queue is full the lowest-ranked request (lowest priority, latest
deadline; possibly the newcomer) is shed and returned, so lower priorities are shed first. `expire`
takes out every request whose deadline has passed. The caller places requests from the front
(`attempts`: a lower priority never overtakes a higher one) whenever its state changes (a finish, a
snapshot, an arrival). A newcomer is not queued behind them: it starts at once when a forecast meets
its own target (it has more of its target left than those that waited; lower priorities must fit a
smaller share of theirs, block/admission/gate.py).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

from block.admission.target import Target

# Held requests one placement pass tries without placing them, at most. One: a held request's wait
# plus its forecast stays about the same while the queues drain at their own pace, so the ones behind
# a miss would mostly miss too; the next change of state (a finish, a snapshot) starts another pass.
MISSES_PER_PASS = 1


@dataclass(slots=True)
class Held:
    target: Target
    item: Any  # the caller's own record of the request
    retry_after_s: int = 1  # from its latest verdict (for a 429 if it is shed)
    key: tuple[int, float, int] = field(default=(0, 0.0, 0))  # set by the queue: its place in order


class HeldQueue:
    def __init__(self, bound: int) -> None:
        self.bound = bound
        self._entries: list[Held] = []  # sorted by key
        self._keys: list[tuple[int, float, int]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Held]:
        return iter(list(self._entries))  # a copy: the caller may remove while iterating

    def first(self) -> Held | None:
        return self._entries[0] if self._entries else None

    def attempts(self) -> Generator[Held, bool, None]:
        """The order of one placement pass: send back whether each request yielded was placed. After
        a miss no lower priority is tried (none overtakes a higher one), and the pass ends after
        MISSES_PER_PASS misses (the next event starts another)."""
        floor: int | None = None
        misses = 0
        for h in list(self._entries):
            if floor is not None and h.target.priority < floor:
                return
            placed = yield h
            if not placed:
                floor = h.target.priority
                misses += 1
                if misses >= MISSES_PER_PASS:
                    return

    def place_in_order(self, try_place: Callable[[Held], bool]) -> None:
        """One placement pass (`attempts`); `try_place` takes a request out of the queue and places it
        (and says so), or leaves it held."""
        order = self.attempts()
        h = next(order, None)
        while h is not None:
            placed = try_place(h)
            try:
                h = order.send(placed)
            except StopIteration:
                return

    def offer(self, held: Held) -> Held | None:
        """Add `held`; returns the request shed to stay within the bound (None when none was)."""
        t = held.target
        held.key = (-t.priority, t.expires_at, next(self._seq))
        if self.bound <= 0:
            return held
        if len(self._entries) >= self.bound:
            last = self._entries[-1]
            if held.key > last.key:
                return held  # it ranks below every held request: it is the one shed
            self._pop(len(self._entries) - 1)
            self._insert(held)
            return last
        self._insert(held)
        return None

    def remove(self, held: Held) -> bool:
        i = bisect.bisect_left(self._keys, held.key)
        if i < len(self._entries) and self._entries[i] is held:
            self._pop(i)
            return True
        return False

    def expire(self, now: float) -> list[Held]:
        """Take out every request whose target can no longer be met (held past its deadline)."""
        gone = [h for h in self._entries if h.target.expires_at <= now]
        for h in gone:
            self.remove(h)
        return gone

    def _insert(self, held: Held) -> None:
        i = bisect.bisect_left(self._keys, held.key)
        self._keys.insert(i, held.key)
        self._entries.insert(i, held)

    def _pop(self, i: int) -> None:
        del self._keys[i]
        del self._entries[i]
