"""The ceiling of prefix caching: every prompt block ever computed anywhere in the fleet counts as cached.

No engine works like this, and no router can do better than it: at admission, the longest prefix of a
request's prompt that any instance has computed before, however long ago, counts as computed (at most
`(tokens - 1) // block_size` blocks, as in PrefixKVCache). It is what perfect cache affinity with an
unbounded cache would give, so a policy's capacity with it is the most cache affinity could add to that
policy. `block simulate --prefix-ceiling` runs a fleet of these.

A hit still takes KV blocks of its own: hits are free of compute, not of memory. On multi-turn chat,
where a session's turns run one after another, a real cache shares nothing between requests running at
the same time either, so the ceiling is a true upper bound there. Where requests running together share a
prefix (shared system prompts) a real cache holds one copy for all of them and this ceiling holds one
each: there it is a ceiling for compute, not for memory.

The fleet's record of computed blocks (`FleetBlocks`) is shared by every instance's cache; the counters
are the instance's own, as vLLM's (first admissions only).
"""

from __future__ import annotations

from block.replica.kv_cache import KVCache, unheld_full_blocks
from block.replica.prefix_cache import CachedBlock
from block.replica.request import Request


class FleetBlocks:
    """The hashes of every prompt block any instance has computed."""

    __slots__ = ("hashes",)

    def __init__(self) -> None:
        self.hashes: set[int] = set()

    def longest_prefix(self, hashes: tuple[int, ...], max_blocks: int) -> int:
        seen, n = self.hashes, 0
        for h in hashes[:max_blocks]:
            if h not in seen:
                break
            n += 1
        return n


class CeilingKVCache(KVCache):
    """A KVCache whose prefix hits come from the whole fleet's computed blocks (see the module docstring).
    A request's `held` lists records of the prompt blocks it has computed or hit, so each block is
    recorded once."""

    __slots__ = ("fleet", "queries", "hits")
    looks_up_prefixes = True

    def __init__(self, num_blocks: int, block_size: int, fleet: FleetBlocks) -> None:
        super().__init__(num_blocks, block_size)
        self.fleet = fleet
        self.queries = 0
        self.hits = 0

    def hit(self, request: Request) -> list[CachedBlock]:
        if request.num_computed_tokens or not request.prefix_hashes:
            return []
        hashes = request.prefix_hashes
        n = self.fleet.longest_prefix(hashes, (request.num_tokens - 1) // self.block_size)
        return [CachedBlock(h) for h in hashes[:n]]

    def allocate(self, request: Request, num_new_tokens: int, hit: list[CachedBlock] | None = None) -> bool:
        h = len(hit) if hit else 0
        looked_up = request.num_computed_tokens == 0
        if h:
            bs = self.block_size
            if -(-(h * bs + num_new_tokens) // bs) - request.num_blocks > self.free_blocks:
                return False  # the hit's blocks are the request's own: they must fit too
            request.held = list(hit)  # type: ignore[arg-type]
            request.num_computed_tokens = h * bs
        if not self.append(request, num_new_tokens):  # (only without a hit: with one, checked above)
            return False
        if looked_up and request.num_preemptions == 0:
            self.queries += request.num_tokens
            self.hits += h * self.block_size
            request.num_cached_tokens = h * self.block_size
        return True

    def append(self, request: Request, num_new_tokens: int) -> bool:
        if not super().append(request, num_new_tokens):
            return False
        hashes = request.prefix_hashes
        if hashes and len(request.held) < len(hashes):
            self._record(request, request.num_computed_tokens + num_new_tokens)
        return True

    def _record(self, request: Request, done: int) -> None:
        """The prompt blocks that `done` computed tokens fill join the fleet's record."""
        hashes, seen = request.prefix_hashes, self.fleet.hashes
        for i in unheld_full_blocks(request, done, self.block_size):
            seen.add(hashes[i])
            request.held.append(CachedBlock(hashes[i]))  # type: ignore[union-attr]

    def free(self, request: Request) -> None:
        super().free(request)
        request.held = ()
