"""`prefix-load`: llm-d's default scheduling profile, a weighted sum of a prefix-cache score and two
load scores; the highest total wins.

Source: llm-d's inference scheduler (llm-d/llm-d-inference-scheduler), whose default profile weighs
prefix-cache-scorer 3, kv-cache-utilization-scorer 2 and queue-scorer 2 under a max-score-picker; the
scorers are the Gateway API Inference Extension's (kubernetes-sigs/gateway-api-inference-extension,
pkg/epp/scheduling/framework/plugins), each a score in [0, 1]:

- prefix: the request's leading blocks the instance holds over all its blocks (llm-d keeps an LRU of
  routed block hashes per server, sized from its KV blocks: what `InstanceView.cached_prefix_blocks`
  gives here from the router's record, or the engine's snapshot where it has one);
- KV-cache utilization: 1 - the share of KV blocks in use;
- queue: (max - own) / (max - min) over the candidates' waiting requests, 1 for all when they are equal.

Ties go to a random one of the best, as the picker shuffles before it sorts.
"""

from __future__ import annotations

from block.policies.base import Candidates, Choice, InstanceView, Policy, RoutingRequest, register


@register
class PrefixLoad(Policy):
    name = "prefix-load"

    def __init__(
        self,
        seed: int | None = None,
        prefix_weight: float = 3.0,
        kv_cache_weight: float = 2.0,
        queue_weight: float = 2.0,
    ) -> None:
        super().__init__(seed)
        self.prefix_weight = prefix_weight
        self.kv_cache_weight = kv_cache_weight
        self.queue_weight = queue_weight

    def choose(self, request: RoutingRequest, candidates: Candidates, now: float) -> Choice:
        views = candidates.views
        queues = [v.waiting for v in views]
        shortest, longest = min(queues), max(queues)
        blocks = len(request.prefix_hashes)

        def score(i: int) -> float:
            v = views[i]
            prefix = v.cached_prefix_blocks(request) / blocks if blocks else 0.0
            queue = 1.0 if longest == shortest else (longest - queues[i]) / (longest - shortest)
            return (
                self.prefix_weight * prefix
                + self.kv_cache_weight * kv_cache_free(v)
                + self.queue_weight * queue
            )

        scores = [score(i) for i in range(len(views))]
        top = max(scores)
        return Choice(self.rng.choice([v for v, s in zip(views, scores, strict=True) if s == top]))


def kv_cache_free(view: InstanceView) -> float:
    """1 - KV-cache utilization, in [0, 1]."""
    if view.num_gpu_blocks <= 0:
        return 0.0
    return min(1.0, max(0.0, view.free_blocks / view.num_gpu_blocks))
