"""The capacity search (block/sim/capacity.py): bracketing, bisection, interpolation, many cells at once."""

from __future__ import annotations

import math

import pytest

from block.sim.capacity import CapacitySearch, Probe, search_capacities

CROSSING = 30.0 + 2.0 * math.log(3.0)  # where exp((q - 30) / 2) meets the 3 s SLO


def exponential(q: float) -> float:
    return math.exp((q - 30.0) / 2.0)


@pytest.mark.parametrize("guess", [12.0, 31.0, 80.0])
def test_the_search_brackets_and_interpolates_the_crossing(guess: float) -> None:
    """On a P99 growing exponentially with rate, log-interpolation recovers the crossing exactly."""
    s = CapacitySearch(guess)
    cap = search_capacities({"cell": s}, lambda todo: [Probe(q, exponential(q)) for _, q in todo])["cell"]
    assert cap.bound == "" and cap.qps == pytest.approx(CROSSING, rel=1e-9)
    rates = [p.qps for p in s.probes]
    assert len(rates) <= s.max_probes and len(set(rates)) == len(rates)
    assert s.good is not None and s.bad is not None and s.good < CROSSING < s.bad
    if len(rates) < s.max_probes:  # narrowed to the tolerance unless the probes ran out
        assert s.bad - s.good <= s.tolerance * s.good * 1.01


def test_a_good_guess_needs_few_probes_and_a_rate_that_always_passes_is_a_lower_bound() -> None:
    near = CapacitySearch(31.0)
    search_capacities({0: near}, lambda todo: [Probe(q, exponential(q)) for _, q in todo])
    assert len(near.probes) <= 5  # a step to bracket it, a few bisections
    easy = CapacitySearch(10.0, max_probes=3)
    cap = search_capacities({0: easy}, lambda todo: [Probe(q, 0.5) for _, q in todo])[0]
    assert cap.bound == ">=" and cap.qps == max(p.qps for p in easy.probes) > 10.0
    assert len(easy.probes) == 3


def test_a_probe_that_gave_up_fails_and_counts_at_its_bound() -> None:
    """A run stopped early is a failure whatever its recorded P99; the interpolation reads the bound."""
    s = CapacitySearch(31.0)

    def measure(todo: list[tuple[str, float]]) -> list[Probe]:
        out = []
        for _, q in todo:
            y = exponential(q)
            gave_up = y > s.give_up_ttft_s
            out.append(Probe(q, s.give_up_ttft_s if gave_up else y, gave_up))
        return out

    cap = search_capacities({"c": s}, measure)["c"]
    assert s.good is not None and s.bad is not None and s.good < CROSSING < s.bad
    assert cap.qps is not None and s.good <= cap.qps <= s.bad
    assert s.give_up_ttft_s == 2 * s.slo_s
    early = CapacitySearch(10.0)
    early.record(Probe(10.0, 0.1, gave_up=True))  # never read as a pass
    assert early.bad == 10.0 and early.good is None


def test_many_searches_advance_together_one_probe_each_per_round() -> None:
    searches = {k: CapacitySearch(g) for k, g in (("a", 20.0), ("b", 31.0), ("c", 45.0))}
    rounds: list[int] = []

    def measure(todo: list[tuple[str, float]]) -> list[Probe]:
        assert len({k for k, _ in todo}) == len(todo)  # at most one probe per search per round
        return [Probe(q, exponential(q)) for _, q in todo]

    caps = search_capacities(searches, measure, lambda r, n: rounds.append(n))
    assert all(c.qps == pytest.approx(CROSSING, rel=1e-9) for c in caps.values())
    assert rounds[0] == 3 and len(rounds) == max(len(s.probes) for s in searches.values())
