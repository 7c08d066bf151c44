"""Capacity: the highest request rate whose P99 TTFT stays within the SLO (the paper uses 3 s), and the
search on rate that finds it.

Rates are measured at discrete points, so the crossing is interpolated between the last rate that meets
the SLO and the first one above it that does not, linearly in log(P99 TTFT): near saturation latency
grows roughly exponentially with load, so a straight line in log space follows the curve better than one
in seconds. Rates beyond the first failure are ignored (a lucky pass after a failure is noise). When every
rate meets the SLO the capacity is at least the highest rate tried; when none does, below the lowest.

The search (`CapacitySearch`, one per cell of an experiment, say a policy x fleet) brackets, then bisects:
1. probe a first guess (a capacity measured before, or the same policy's at a nearby setting), then walk
   up or down from it in growing steps (`step`, 2 x `step`, ...) until one rate meets the SLO and the
   next does not;
2. bisect that bracket until it is narrower than `tolerance` of the rate (or `max_probes` are spent);
3. interpolate the capacity as above between the highest passing and the lowest failing rate.
A probe that is clearly over the SLO need not run to its end: `give_up_ttft_s` (twice the SLO) is the
bound past which a simulated run may stop (block/sim/early_stop.py); its P99 is then recorded as that
bound, a lower bound that only the interpolation reads, and the bracket makes the difference small.
`search_capacities` advances many searches in rounds, handing every unfinished search's next rate to
one `measure` call, so a pool of processes runs the probes of every cell at once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

PAPER_SLO_S = 3.0


@dataclass(frozen=True)
class Capacity:
    qps: float | None  # the estimate (the bound when censored); None when no rate was measured
    bound: str = ""  # "" (interpolated), ">=" (every rate met the SLO) or "<" (none did)

    def __str__(self) -> str:
        if self.qps is None:
            return "n/a"
        return f"{self.bound}{self.qps:.1f}" if self.bound else f"{self.qps:.1f}"


def capacity(points: Iterable[tuple[float, float | None]], slo_s: float = PAPER_SLO_S) -> Capacity:
    """`points`: (rate, P99 TTFT) pairs; a None latency (nothing completed) counts as a failure."""
    pts = sorted((q, math.inf if y is None else y) for q, y in points)
    if not pts:
        return Capacity(None)
    if pts[0][1] > slo_s:
        return Capacity(pts[0][0], "<")
    for (q0, y0), (q1, y1) in zip(pts, pts[1:], strict=False):
        if y1 > slo_s:
            if math.isinf(y1) or y0 <= 0:
                return Capacity(q0)
            frac = (math.log(slo_s) - math.log(y0)) / (math.log(y1) - math.log(y0))
            return Capacity(q0 + frac * (q1 - q0))
    return Capacity(pts[-1][0], ">=")


@dataclass(frozen=True)
class Probe:
    qps: float
    ttft_p99_s: float | None  # None: nothing completed (a failure)
    gave_up: bool = False  # stopped early: the P99 is over `ttft_p99_s`, the give-up bound
    wall_s: float = 0.0  # what the probe took to measure
    cpu_s: float = 0.0  # and its CPU time (on a shared machine, the cost that does not depend on load)


@dataclass
class CapacitySearch:
    """One cell's walk to a bracket and bisection; `next_rate` says what to measure next (None: done)."""

    guess: float
    slo_s: float = PAPER_SLO_S
    step: float = 0.06  # relative step of the walk to a bracket
    tolerance: float = 0.03  # bisect until the bracket is narrower than this share of the rate
    max_probes: int = 10
    probes: list[Probe] = field(default_factory=list)
    good: float | None = None  # the highest rate that met the SLO
    bad: float | None = None  # the lowest rate that did not

    @property
    def give_up_ttft_s(self) -> float:
        """A run whose P99 TTFT is certainly over this may stop: it fails clearly."""
        return 2 * self.slo_s

    def next_rate(self) -> float | None:
        if not self.probes:
            return round(self.guess, 3)
        if len(self.probes) >= self.max_probes:
            return None
        if self.good is None or self.bad is None:  # still walking to a bracket: every probe so far walked
            last = self.probes[-1].qps
            factor = 1 + self.step * len(self.probes)
            return round(last * factor if self.good is not None else last / factor, 3)
        if self.bad - self.good <= self.tolerance * self.good:
            return None
        return round((self.good + self.bad) / 2, 3)

    def record(self, probe: Probe) -> None:
        self.probes.append(probe)
        y = probe.ttft_p99_s
        if y is not None and y <= self.slo_s and not probe.gave_up:
            self.good = probe.qps if self.good is None else max(self.good, probe.qps)
        else:
            self.bad = probe.qps if self.bad is None else min(self.bad, probe.qps)

    def result(self) -> Capacity:
        return capacity(((p.qps, p.ttft_p99_s) for p in self.probes), self.slo_s)


Key = TypeVar("Key", bound=Hashable)


def search_capacities(
    searches: dict[Key, CapacitySearch],
    measure: Callable[[list[tuple[Key, float]]], list[Probe]],
    on_round: Callable[[int, int], None] | None = None,
) -> dict[Key, Capacity]:
    """Advance every search a probe per round until all are done. `measure` gets the round's
    (key, rate) pairs and returns their probes in the same order; `on_round(round, probes)` follows."""
    rounds = 0
    while True:
        wanted = [(key, s.next_rate()) for key, s in searches.items()]
        todo = [(key, q) for key, q in wanted if q is not None]
        if not todo:
            return {key: s.result() for key, s in searches.items()}
        rounds += 1
        for (key, _), probe in zip(todo, measure(todo), strict=True):
            searches[key].record(probe)
        if on_round is not None:
            on_round(rounds, len(todo))


def write_capacity_files(caps: dict[str, Capacity], runs_dir: Path, slo_s: float = PAPER_SLO_S) -> None:
    """One `capacity_{label}.json` per variant, in the form `block plot` reads next to results files."""
    for label, cap in caps.items():
        doc = {
            "label": label,
            "capacity_qps": cap.qps,
            "bound": cap.bound,
            "slo": {"ttft_p99": slo_s},
            "method": "highest rate with P99 TTFT within the SLO, log-interpolated between measured rates",
        }
        safe = "".join(c if c.isalnum() or c in ".+-" else "-" for c in label)
        (runs_dir / f"capacity_{safe}.json").write_text(json.dumps(doc, indent=2) + "\n")
