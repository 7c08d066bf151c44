"""Stop a run early once its P99 TTFT is certain to be over a bound.

A capacity search only needs to know that an overloaded rate fails the SLO, yet such runs are the slowest
to simulate: the queues grow, every decision forecasts more, and the drain at the end is long. The run's
P99 TTFT is numpy's linear percentile over its completed requests, so once more than 1% of all requests
(plus two, for the interpolation) have waited longer than `ttft_s` for their first token, the P99 is over
`ttft_s` whatever the rest do. Requests are checked in arrival order, each once, when the loop's clock
has passed its arrival + `ttft_s` by a margin (the replicas have then completed every step that could have
given it a first token in time), so the watch costs O(requests) in all.
"""

from __future__ import annotations

from collections.abc import Sequence

from block.replica import Request


class TtftWatch:
    def __init__(self, ttft_s: float, arrivals: Sequence[float], margin_s: float) -> None:
        self.ttft_s = ttft_s
        self.arrivals = arrivals
        self.margin_s = margin_s  # how far the replicas may lag the loop's clock (one router tick)
        self.limit = int(0.01 * len(arrivals)) + 2
        self.next = 0  # the first request not yet judged
        self.late = 0

    def over(self, now: float, reqs: Sequence[Request | None], routed: int) -> bool:
        """Is the P99 TTFT now certainly over the bound? `routed`: requests [0, routed) were routed."""
        horizon = now - self.margin_s - self.ttft_s
        arrivals, j = self.arrivals, self.next
        while j < routed and arrivals[j] < horizon:
            q = reqs[j]
            if q is not None:  # None: rejected, not in the percentile
                first = q.first_token_time
                if first is None or first - arrivals[j] > self.ttft_s:
                    self.late += 1
            j += 1
        self.next = j
        return self.late >= self.limit
