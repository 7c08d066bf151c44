"""`cache-aware`: SGLang router's cache-aware policy, the baseline for prefix affinity with a load guard.

Source: SGLang's router (sgl-project/sglang, sgl-router/src/policies/cache_aware.rs; the defaults are its
command line's: --cache-threshold 0.3, --balance-abs-threshold 64, --balance-rel-threshold 1.5).

- Load is each worker's requests in flight, as the router counts them. The fleet is imbalanced when
  both max - min > `balance_abs_threshold` and max > `balance_rel_threshold` x min: then the request
  goes to the shortest queue, whatever is cached.
- Otherwise the worker with the longest cached prefix of the request wins when that prefix is more
  than `cache_threshold` of the prompt. Below it, SGLang sends the request to the worker whose
  approximate tree is smallest (the most room for a new prefix); the views' nearest measure of room is
  the free KV blocks, so the most free blocks win here.

SGLang matches characters of the raw text against its own per-worker tree; here the match is the
instance's cached prefix in blocks (`InstanceView.cached_prefix_blocks`: the engine's snapshot, or the
router's own record of what it routed where, the same approximation SGLang's tree makes), and the
match rate is the cached tokens over the prompt's.
"""

from __future__ import annotations

from block.policies.base import Candidates, Choice, Policy, RoutingRequest, register


@register
class CacheAware(Policy):
    name = "cache-aware"

    def __init__(
        self,
        seed: int | None = None,
        cache_threshold: float = 0.3,
        balance_abs_threshold: int = 64,
        balance_rel_threshold: float = 1.5,
    ) -> None:
        super().__init__(seed)
        self.cache_threshold = cache_threshold
        self.balance_abs_threshold = balance_abs_threshold
        self.balance_rel_threshold = balance_rel_threshold

    def choose(self, request: RoutingRequest, candidates: Candidates, now: float) -> Choice:
        views = candidates.views
        loads = [v.in_flight for v in views]
        high, low = max(loads), min(loads)
        if high - low > self.balance_abs_threshold and high > self.balance_rel_threshold * low:
            return Choice(min(views, key=lambda v: v.in_flight))
        cached = [v.cached_prefix_blocks(request) for v in views]
        best = max(range(len(views)), key=lambda i: (cached[i], -views[i].in_flight))
        if match_rate(request, cached[best]) > self.cache_threshold:
            return Choice(views[best])
        return Choice(max(views, key=lambda v: (v.free_blocks, -v.in_flight)))


def match_rate(request: RoutingRequest, cached_blocks: int) -> float:
    """The share of the prompt's tokens in the cached prefix."""
    if request.prompt_tokens <= 0:
        return 0.0
    return min(1.0, cached_blocks * request.prefix_block_size / request.prompt_tokens)
