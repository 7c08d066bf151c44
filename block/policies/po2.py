"""Power of two choices on in-flight counts, as sglang-router's `power_of_two` does.

Two instances drawn at random, the one with fewer requests in flight wins (a tie is a coin flip). No
forecasts and no snapshots: only the router's own counts, so it is the like-for-like heuristic against
which Block's forecasting `block-po2` (the same two-instance sample, chosen by forecast) is judged.
"""

from __future__ import annotations

from block.policies.base import Candidates, Choice, Policy, RoutingRequest, register


@register
class PowerOfTwo(Policy):
    name = "po2"
    needs_snapshots = False

    def choose(self, request: RoutingRequest, candidates: Candidates, now: float) -> Choice:
        if len(candidates) < 2:
            return Choice(candidates[0])
        a, b = self.rng.sample(list(candidates), 2)
        if a.in_flight == b.in_flight:
            return Choice(a if self.rng.random() < 0.5 else b)
        return Choice(a if a.in_flight < b.in_flight else b)
