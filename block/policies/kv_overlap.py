"""`kv-overlap`: Dynamo's KV router cost, the blocks an instance would have to prefill plus the blocks it
would hold; the lowest cost wins.

Source: NVIDIA Dynamo's KV router (ai-dynamo/dynamo, docs/router/kv_cache_routing.md and the worker
selector of lib/kv-router): cost = kv_overlap_score_weight x potential prefill blocks + potential active
(decode) blocks, with weight 1.0 and router temperature 0 (the lowest cost, not a softmax sample) by
default.

- potential prefill blocks: the prompt tokens the instance still has to prefill (its waiting prompts)
  plus this prompt's tokens beyond its cached prefix (`InstanceView.cached_prefix_blocks`), in blocks;
- potential active blocks: the KV blocks in use there plus the blocks this prompt will hold.

Ties go to a random one of the cheapest.
"""

from __future__ import annotations

from block.policies.base import Candidates, Choice, InstanceView, Policy, RoutingRequest, register


@register
class KvOverlap(Policy):
    name = "kv-overlap"

    def __init__(self, seed: int | None = None, overlap_score_weight: float = 1.0) -> None:
        super().__init__(seed)
        self.overlap_score_weight = overlap_score_weight

    def choose(self, request: RoutingRequest, candidates: Candidates, now: float) -> Choice:
        views = candidates.views
        costs = [self.cost(request, v) for v in views]
        low = min(costs)
        return Choice(self.rng.choice([v for v, c in zip(views, costs, strict=True) if c == low]))

    def cost(self, request: RoutingRequest, view: InstanceView) -> float:
        size = max(1, view.block_size)
        cached_tokens = min(
            request.prompt_tokens, view.cached_prefix_blocks(request) * request.prefix_block_size
        )
        prefill_blocks = (view.waiting_prompt_tokens + request.prompt_tokens - cached_tokens) / size
        active_blocks = view.num_gpu_blocks - view.free_blocks + -(-request.prompt_tokens // size)
        return self.overlap_score_weight * prefill_blocks + active_blocks
