"""Paged KV cache accounting: which request holds how many fixed-size blocks.

Block only needs counts, not block tables: the forecast depends on when allocation fails, never
on which physical block a token lands in. A request about to compute n more tokens needs
blocks_for(computed + n) - held more blocks; it always holds at least blocks_for(computed).

The scheduler (Replica.schedule) asks through named operations, after nano-vllm's block manager:

- `allocate(request, n)`: a waiting request is admitted to compute n tokens (first admission, or
  again after a preemption);
- `append(request, n)`: a running request computes n more tokens (a decode or the next prefill chunk);
- `free(request)`: it finished, was aborted or was preempted;
- `can_allocate` / `blocks_needed` / `demand`: the same questions without the side effect;
- `append_all(requests, n)`: `append` for many requests at once (a run of decode steps);
- `adopt(request)`: a request rebuilt from a snapshot with its cache already filled.

Admission and growth are separate operations because prefix caching treats them differently
(`PrefixKVCache`, over prefix_cache.PrefixCache): admission is where a request's cached prefix is looked
up (`hit`) and its computed tokens jump ahead, growth is where newly filled prompt blocks are hashed,
and a freed block stays cached until evicted. `free_blocks` counts the blocks an allocation may take.

Replica.run_decodes uses `demand` and `append_all` for a run of decode steps. The forecast's
FastReplica (fast_replica.py) does not call this class: it keeps one free count and, for its decode
group, a histogram of when members need a block, with the same arithmetic inlined in its hot loops;
tests/predictor/test_skip_ahead.py keeps it equal to Replica. A change here needs its twin there: in
`FastReplica.load`, its step's admission loop, `_finish` and `_preempt` (prefix caching is there too).
"""

from __future__ import annotations

from collections.abc import Iterable

from block.replica.prefix_cache import CachedBlock, PrefixCache
from block.replica.request import Request


def blocks_for(num_tokens: int, block_size: int) -> int:
    """Blocks that hold `num_tokens` tokens."""
    return -(-num_tokens // block_size)


def unheld_full_blocks(request: Request, done: int, block_size: int) -> range:
    """The prompt blocks (indices into `prefix_hashes`) that `done` computed tokens fill and `request`
    holds no record of yet; when there are any, its `held` is a list to append their records to."""
    full = min(len(request.prefix_hashes), done // block_size)
    start = len(request.held)
    if start < full and not isinstance(request.held, list):
        request.held = []
    return range(start, full)


class KVCache:
    __slots__ = ("num_blocks", "block_size", "free_blocks", "prefix")
    looks_up_prefixes = False  # whether `hit` can find anything (the scheduler skips it otherwise)

    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.free_blocks = num_blocks
        self.prefix: PrefixCache | None = None  # set by PrefixKVCache

    @property
    def used_blocks(self) -> int:
        return self.num_blocks - self.free_blocks

    @property
    def usage(self) -> float:
        return self.used_blocks / self.num_blocks

    def fits(self, num_tokens: int) -> bool:
        """Whether a request of `num_tokens` tokens could ever be held (in an empty cache)."""
        return blocks_for(num_tokens, self.block_size) <= self.num_blocks

    def blocks_needed(self, request: Request, num_new_tokens: int) -> int:
        """More blocks `request` needs to compute `num_new_tokens` more tokens (<= 0: none)."""
        return -(-(request.num_computed_tokens + num_new_tokens) // self.block_size) - request.num_blocks

    def demand(self, requests: Iterable[Request], num_new_tokens: int) -> int:
        """More blocks the requests need together to compute `num_new_tokens` more tokens each."""
        bs = self.block_size
        return sum(-(-(q.num_computed_tokens + num_new_tokens) // bs) - q.num_blocks for q in requests)

    def can_allocate(self, request: Request, num_new_tokens: int) -> bool:
        return self.blocks_needed(request, num_new_tokens) <= self.free_blocks

    def hit(self, request: Request) -> list[CachedBlock]:
        """The cached blocks a waiting request would start from (none: no prefix caching)."""
        return []

    def allocate(self, request: Request, num_new_tokens: int, hit: list[CachedBlock] | None = None) -> bool:
        """Admit a waiting request to compute `num_new_tokens` tokens (after its cache `hit`); False
        (nothing taken) when too few blocks are free."""
        return self.append(request, num_new_tokens)

    def append(self, request: Request, num_new_tokens: int) -> bool:
        """Let a running request compute `num_new_tokens` more tokens; False (nothing taken) when
        too few blocks are free."""
        # blocks_needed, inlined: this runs for every request of every step
        need = -(-(request.num_computed_tokens + num_new_tokens) // self.block_size) - request.num_blocks
        if need > 0:
            if need > self.free_blocks:
                return False
            self.free_blocks -= need
            request.num_blocks += need
        return True

    def append_all(self, requests: Iterable[Request], num_new_tokens: int) -> None:
        """`append` for each of the requests, known to fit (checked with `demand`)."""
        bs, grown = self.block_size, 0
        for q in requests:
            blocks = -(-(q.num_computed_tokens + num_new_tokens) // bs)
            if blocks > q.num_blocks:
                grown += blocks - q.num_blocks
                q.num_blocks = blocks
        self.free_blocks -= grown

    def free(self, request: Request) -> None:
        self.free_blocks += request.num_blocks
        request.num_blocks = 0

    def adopt(self, request: Request) -> None:
        """Account for a request rebuilt from a snapshot with its cache already filled."""
        request.num_blocks = blocks_for(request.num_computed_tokens, self.block_size)
        self.free_blocks -= request.num_blocks


class PrefixKVCache(KVCache):
    """KVCache with vLLM V1's automatic prefix caching (see prefix_cache.py for the block pool).

    At admission a request with nothing computed looks up the longest cached prefix of its
    `prefix_hashes`, at most (tokens - 1) // block_size blocks: at least one token is always computed,
    to get logits. The hit's blocks count as computed; those taken from the free queue count against
    the free blocks, and the admission fails (nothing taken) unless the new blocks fit the rest.
    Preemption frees the blocks (they stay cached), so a recompute hits its own prompt again unless
    it was evicted meanwhile; blocks of generated tokens carry no identity here and are recomputed.
    `queries` and `hits` count prompt tokens looked up and found at first admissions, as vLLM's
    counters (vllm:prefix_cache_queries and _hits leave out requests coming back from a preemption);
    `recompute_queries` and `recompute_hits` count those readmissions after a preemption apart.
    """

    __slots__ = ("queries", "hits", "recompute_queries", "recompute_hits")
    looks_up_prefixes = True

    def __init__(self, num_blocks: int, block_size: int) -> None:
        super().__init__(num_blocks, block_size)
        self.prefix = PrefixCache(num_blocks)
        self.queries = self.hits = 0
        self.recompute_queries = self.recompute_hits = 0

    def hit(self, request: Request) -> list[CachedBlock]:
        if request.num_computed_tokens or not request.prefix_hashes:
            return []
        return self.prefix.lookup(request.prefix_hashes, (request.num_tokens - 1) // self.block_size)  # type: ignore[union-attr]

    def allocate(self, request: Request, num_new_tokens: int, hit: list[CachedBlock] | None = None) -> bool:
        h = len(hit) if hit else 0
        looked_up = request.num_computed_tokens == 0
        if h:
            bs = self.block_size
            need = -(-(h * bs + num_new_tokens) // bs) - h - request.num_blocks
            evictable = sum(1 for b in hit if b.ref == 0)  # type: ignore[union-attr]
            if need > self.free_blocks - evictable:
                return False
            self.free_blocks -= self.prefix.touch(hit)  # type: ignore[union-attr, arg-type]
            request.held = list(hit)  # type: ignore[arg-type]
            request.num_blocks += h
            request.num_computed_tokens = h * bs
        if not self.append(request, num_new_tokens):
            return False
        if looked_up and request.num_preemptions == 0:  # vLLM counts a preempted one apart
            self.queries += request.num_tokens
            self.hits += h * self.block_size
            request.num_cached_tokens = h * self.block_size
        elif looked_up:
            self.recompute_queries += request.num_tokens
            self.recompute_hits += h * self.block_size
        return True

    def append(self, request: Request, num_new_tokens: int) -> bool:
        done = request.num_computed_tokens + num_new_tokens
        need = -(-done // self.block_size) - request.num_blocks
        if need > 0:
            if need > self.free_blocks:
                return False
            self.free_blocks -= need
            request.num_blocks += need
            self.prefix.take(need)  # type: ignore[union-attr]
        hashes = request.prefix_hashes
        if hashes and len(request.held) < len(hashes):
            self._register(request, done)
        return True

    def _register(self, request: Request, done: int) -> None:
        """Give the prompt blocks that `done` computed tokens fill their identity."""
        hashes, register = request.prefix_hashes, self.prefix.register  # type: ignore[union-attr]
        for i in unheld_full_blocks(request, done, self.block_size):
            request.held.append(register(hashes[i]))  # type: ignore[union-attr]

    def append_all(self, requests: Iterable[Request], num_new_tokens: int) -> None:
        before = self.free_blocks
        super().append_all(requests, num_new_tokens)
        self.prefix.take(before - self.free_blocks)  # type: ignore[union-attr]

    def free(self, request: Request) -> None:
        held = request.held
        self.free_blocks += self.prefix.release(held, request.num_blocks - len(held))  # type: ignore[union-attr]
        request.num_blocks = 0
        request.held = ()

    def adopt_all(self, requests: list[Request], free_queue: list[tuple[int, int]]) -> None:
        """Account for requests rebuilt from a snapshot (as `adopt`), with the cached blocks each holds
        (its leading prompt blocks) and the snapshot's free cached blocks in eviction order."""
        bs = self.block_size
        held_hashes = [r.prefix_hashes[: r.num_computed_tokens // bs] for r in requests]
        anonymous = sum(blocks_for(r.num_computed_tokens, bs) for r in requests)
        anonymous -= sum(len(h) for h in held_hashes)
        distinct = len({h for hs in held_hashes for h in hs})
        self.free_blocks = self.num_blocks - anonymous - distinct
        self.prefix, records = PrefixCache.restore(self.free_blocks, held_hashes, free_queue)
        for r, mine in zip(requests, records, strict=True):
            r.num_blocks = blocks_for(r.num_computed_tokens, bs)
            r.held = mine if mine else ()
