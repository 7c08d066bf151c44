"""Capacity by search on rate, for many cells at once, through any experiment Runner.

Each cell (say a fleet x policy) has a first guess. As `block experiment model-error` does for one cell:
walk up or down from the guess in growing steps (6%, 12%, ...) until one rate meets the P99 TTFT SLO and
the next does not, bisect that bracket until it is narrower than `tolerance` of the rate, then interpolate
the capacity in log(P99 TTFT) between the measured rates (block/sim/capacity.py). Here the cells move in
lockstep: every round hands the next probe of every unfinished cell to the runner in one call, so a
simulator runner keeps its workers busy across cells. Every probe is an ordinary run with its results file
(named by the cell's spec and the rate), so an interrupted search resumes from the files already written.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from block.experiments.plan import Runner, RunOutput, RunSpec
from block.sim.capacity import PAPER_SLO_S, capacity


@dataclass
class CellSearch:
    """One cell's walk and bisection; `next_rate` says what to measure next (None: done)."""

    guess: float
    step: float = 0.06
    tolerance: float = 0.03
    max_probes: int = 10
    slo_s: float = PAPER_SLO_S
    probes: list[RunOutput] = field(default_factory=list)
    good: float | None = None
    bad: float | None = None
    moves: int = 0

    def p99(self, o: RunOutput) -> float | None:
        return o.summary["ttft_s"]["p99"]

    def passed(self, o: RunOutput) -> bool:
        y = self.p99(o)
        return y is not None and y <= self.slo_s

    def next_rate(self) -> float | None:
        if not self.probes:
            return round(self.guess, 3)
        if len(self.probes) >= self.max_probes:
            return None
        if self.good is None or self.bad is None:  # still walking to a bracket
            self.moves += 1
            last = self.probes[-1].spec.qps
            factor = 1 + self.step * self.moves
            return round(last * factor if self.good is not None else last / factor, 3)
        if self.bad - self.good <= self.tolerance * self.good:
            return None
        return round((self.good + self.bad) / 2, 3)

    def record(self, o: RunOutput) -> None:
        self.probes.append(o)
        q = o.spec.qps
        if self.passed(o):
            self.good = q if self.good is None else max(self.good, q)
        else:
            self.bad = q if self.bad is None else min(self.bad, q)

    def result(self) -> dict[str, Any]:
        cap = capacity(((o.spec.qps, self.p99(o)) for o in self.probes), self.slo_s)
        return {
            "capacity_qps": cap.qps,
            "bound": cap.bound,
            "probes": [
                {"qps": o.spec.qps, "ttft_p99_s": self.p99(o), "e2e_p99_s": o.summary["e2e_s"]["p99"]}
                for o in sorted(self.probes, key=lambda o: o.spec.qps)
            ],
        }


def search_all(
    runner: Runner,
    cells: dict[Hashable, tuple[Callable[[float], RunSpec], float]],
    out_dir: Path,
    on_round: Callable[[int, int], None] | None = None,
    **search: Any,
) -> dict[Hashable, CellSearch]:
    """`cells`: key -> (the cell's spec at a rate, first guess). Returns every cell's finished search."""
    searches = {key: CellSearch(guess, **search) for key, (_, guess) in cells.items()}
    rounds = 0
    while True:
        wanted = {key: s.next_rate() for key, s in searches.items()}
        todo = [(key, cells[key][0](q)) for key, q in wanted.items() if q is not None]
        if not todo:
            return searches
        rounds += 1
        outputs = runner.run([spec for _, spec in todo], out_dir)
        for (key, _), output in zip(todo, outputs, strict=True):
            searches[key].record(output)
        if on_round is not None:
            on_round(rounds, len(todo))
