"""The router's own record of which prompt blocks one instance may hold in its prefix cache.

For engines that do not report their cache (stock vLLM without KV events), the router remembers what it
routed where, as SGLang's router keeps an approximate radix tree per worker and llm-d's prefix-cache
scorer an LRU of block hashes per server: every block hash of a routed prompt (block.prefix.chain_hashes)
is recorded as cached there, and the longest run of a new prompt's leading hashes found is its expected
hit. Because a block's hash covers its whole prefix (chained), a set of hashes is a radix tree already.

Bound: at most `capacity` hashes, the instance's KV blocks (num_gpu_blocks), since the engine cannot cache
more; beyond it the least recently routed blocks go first. A prompt's blocks are touched last block first,
so its first block is the most recent: under pressure a prefix loses its tail before its head, as vLLM
frees a request's blocks tail first into its LRU queue, and the index never keeps a block whose parent it
dropped. What it cannot see: evictions the engine makes for other routers' traffic or for decode blocks,
and the generated tokens' blocks (vLLM caches those too; a follow-up turn then matches up to the answer).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


class PrefixIndex:
    __slots__ = ("_blocks", "capacity")

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.capacity = capacity
        self._blocks: OrderedDict[int, None] = OrderedDict()  # least recently routed first

    def __len__(self) -> int:
        return len(self._blocks)

    def __contains__(self, block_hash: int) -> bool:
        return block_hash in self._blocks

    def record(self, hashes: Sequence[int]) -> None:
        """A prompt with these block hashes was routed here: all of them are now the most recent."""
        blocks = self._blocks
        for h in reversed(hashes):  # the first block ends up the most recent: tails are evicted first
            if h in blocks:
                blocks.move_to_end(h)
            else:
                blocks[h] = None
        self._evict()

    def match(self, hashes: Sequence[int]) -> int:
        """How many leading blocks of `hashes` are recorded (a lookup changes no recency)."""
        blocks = self._blocks
        n = 0
        for h in hashes:
            if h not in blocks:
                break
            n += 1
        return n

    def resize(self, capacity: int) -> None:
        """A new bound (the instance reported another num_gpu_blocks); evicts down to it at once."""
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.capacity = capacity
        self._evict()

    def clear(self) -> None:
        self._blocks.clear()

    def _evict(self) -> None:
        blocks = self._blocks
        while len(blocks) > self.capacity:
            blocks.popitem(last=False)
