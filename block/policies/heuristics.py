"""Heuristic policies: the schedulers Block is compared against."""

from __future__ import annotations

from block.policies.base import (
    Candidates,
    Choice,
    InstanceView,
    Policy,
    RoutingRequest,
    least_requests,
    register,
)
from block.replica.kv_cache import blocks_for


@register
class RoundRobin(Policy):
    name = "round-robin"
    reads_state = False
    needs_snapshots = False

    def __init__(self, seed: int | None = None) -> None:
        super().__init__(seed)
        self.next = 0

    def choose(self, request: RoutingRequest, candidates: Candidates, now: float) -> Choice:
        chosen = candidates[self.next % len(candidates)]
        self.next += 1
        return Choice(chosen)


@register
class RandomChoice(Policy):
    name = "random"
    reads_state = False
    needs_snapshots = False

    def choose(self, request: RoutingRequest, candidates: Candidates, now: float) -> Choice:
        return Choice(self.rng.choice(candidates.views))


@register
class LeastRequests(Policy):
    name = "least-requests"
    needs_snapshots = False

    def choose(self, request: RoutingRequest, candidates: Candidates, now: float) -> Choice:
        return Choice(least_requests(candidates))


@register
class MinQPM(Policy):
    """Fewest requests routed in the last minute."""

    name = "min-qpm"
    needs_snapshots = False
    window_s = 60.0

    def choose(self, request: RoutingRequest, candidates: Candidates, now: float) -> Choice:
        return Choice(min(candidates, key=lambda v: (v.routed_in_last(self.window_s, now), v.in_flight)))


@register
class Llumnix(Policy):
    """Llumnix's freeness: KV blocks left after the waiting prompts are admitted, per running request."""

    name = "llumnix"

    def choose(self, request: RoutingRequest, candidates: Candidates, now: float) -> Choice:
        def freeness(v: InstanceView) -> float:
            reserved = blocks_for(v.waiting_prompt_tokens, v.block_size)
            return (v.free_blocks - reserved) / max(v.running, 1)

        return Choice(max(candidates, key=lambda v: (freeness(v), -v.in_flight)))


@register
class Infaas(Policy):
    """INFaaS-style load: free KV blocks per running request."""

    name = "infaas"

    def choose(self, request: RoutingRequest, candidates: Candidates, now: float) -> Choice:
        return Choice(max(candidates, key=lambda v: (v.free_blocks / max(v.running, 1), -v.in_flight)))
