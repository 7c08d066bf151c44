"""Who was routed when: the record behind routing rates and anticipated arrivals.

One `ArrivalLog` per instance gives its own routing rate (min-qpm reads it, anticipation may use it).
A `FleetLog` is shared by all the trackers of one router or simulated cluster: anticipation then
expects each instance to receive the fleet's rate divided by the instances in rotation. Under a
balancing policy that is where future requests go, and it is the same for every candidate, so it
corrects the forecasts' bias (later arrivals are unseen) without reordering the candidates the way
each instance's own recent rate would (the instance the policy just favoured would look worse).
"""

from __future__ import annotations

import bisect

from block.predictor.forecast import Arrivals

RATE_WINDOW_S = 600.0  # routing times older than this are forgotten


class ArrivalLog:
    def __init__(self, keep_s: float = RATE_WINDOW_S) -> None:
        self.keep_s = keep_s
        self._at: list[float] = []
        self._lengths: list[tuple[int, int]] = []  # (prompt, expected output) of each in _at
        self.recorded = 0  # ever: changes with every record

    def record(self, at: float, prompt_tokens: int, output_tokens: int) -> None:
        self._at.append(at)
        self._lengths.append((prompt_tokens, output_tokens))
        self.recorded += 1
        if self._at[0] < at - self.keep_s:
            cut = bisect.bisect_left(self._at, at - self.keep_s)
            del self._at[:cut]
            del self._lengths[:cut]

    def count_since(self, since: float) -> int:
        return len(self._at) - bisect.bisect_right(self._at, since)

    def arrivals(self, now: float, window_s: float, share: float = 1.0) -> Arrivals | None:
        """`share` of the rate over the last `window_s`, with those requests' mean lengths; None when
        nothing was routed then."""
        n = self.count_since(now - window_s) if window_s > 0 else 0
        if n == 0 or share <= 0:
            return None
        recent = self._lengths[-n:]
        prompt = round(sum(p for p, _ in recent) / n)
        output = round(sum(o for _, o in recent) / n)
        return Arrivals(share * n / window_s, max(1, prompt), max(1, output))


class FleetLog(ArrivalLog):
    """Every request routed to any instance of one fleet; `instances` is kept by the fleet's owner
    (the number in rotation)."""

    def __init__(self, instances: int = 1, keep_s: float = RATE_WINDOW_S) -> None:
        super().__init__(keep_s)
        self.instances = instances
        self._last: tuple[tuple[float, float, int, int], Arrivals | None] | None = None

    def per_instance(self, now: float, window_s: float) -> Arrivals | None:
        # One decision forecasts every instance at the same `now`: work it out once.
        key = (now, window_s, self.instances, self.recorded)
        if self._last is None or self._last[0] != key:
            self._last = (key, self.arrivals(now, window_s, 1.0 / max(1, self.instances)))
        return self._last[1]
