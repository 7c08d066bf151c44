"""A capacity search on rate, one probe at a time, for experiments that run many searches side by side.

`rate_search` is a generator: it yields the next rate to measure and is sent that rate's P99 TTFT
(None: nothing completed). It walks from `guess` in growing steps (`step`, 2 x `step`, ...) until one
rate meets the SLO and the next does not, bisects that bracket until it is narrower than `tolerance` of
the rate, and returns the capacity interpolated in log(P99 TTFT) (block/sim/capacity.py), as
`block experiment model-error` does. Driving several searches in rounds lets one pool of processes
measure every search's next probe at once.
"""

from __future__ import annotations

import math
from collections.abc import Generator

from block.sim.capacity import PAPER_SLO_S, Capacity, capacity

RateSearch = Generator[float, float | None, Capacity]


def rate_search(
    guess: float,
    slo_s: float = PAPER_SLO_S,
    step: float = 0.08,
    tolerance: float = 0.04,
    max_probes: int = 7,
) -> RateSearch:
    probes: list[tuple[float, float | None]] = []

    def passes(qps: float, p99: float | None) -> bool:
        probes.append((qps, p99))
        return p99 is not None and p99 <= slo_s

    qps = round(guess, 3)
    good = bad = None
    moves = 0
    ok = passes(qps, (yield qps))
    good, bad = (qps, None) if ok else (None, qps)
    while (good is None or bad is None) and len(probes) < max_probes:
        moves += 1
        factor = 1 + step * moves
        qps = round(qps * factor if bad is None else qps / factor, 3)
        if passes(qps, (yield qps)):
            good = qps
        else:
            bad = qps
    while good is not None and bad is not None and len(probes) < max_probes:
        if bad - good <= tolerance * good:
            break
        mid = round(math.sqrt(good * bad), 3)
        if passes(mid, (yield mid)):
            good = mid
        else:
            bad = mid
    return capacity(probes, slo_s)
