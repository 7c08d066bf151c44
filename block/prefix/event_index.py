"""One instance's prefix cache as its vLLM KV events describe it, in Block's own block hashes.

vLLM names a cached block by a hash the router would have to reproduce exactly (algorithm, seed, extra
keys). It does not need to: every `BlockStored` event carries the blocks' tokens and its parent's vLLM
hash, so the index re-hashes each stored block with `block.prefix.next_hash` from its parent's Block hash
and keeps the translation. A lookup is then the same walk as everywhere else in Block: the leading
entries of a request's `prefix_hashes` that the instance holds. This assumes the router tokenises the
prompt as the engine does (same tokenizer, same special tokens); blocks whose vLLM hash mixes in extra
keys (LoRA, multimodal inputs, a cache salt) are indexed by their tokens alone.

Counts: vLLM may hold two blocks with the same hash for a moment; each store adds one to its count and each
removal takes one, and the block stays indexed while the count is positive.
"""

from __future__ import annotations

from collections.abc import Sequence

from block.prefix.hashing import next_hash
from block.prefix.vllm_events import AllBlocksCleared, BlockRemoved, BlockStored, KVEvent

VllmHash = bytes | int


class UnknownParent(ValueError):
    """A stored block's parent was never stored here: events were missed."""


class EventIndex:
    def __init__(self) -> None:
        self.block_size: int | None = None  # learned from the first stored block
        self._ours: dict[VllmHash, int] = {}  # vLLM hash -> Block hash, for blocks held
        self._count: dict[VllmHash, int] = {}  # vLLM hash -> blocks held with it
        self._held: dict[int, int] = {}  # Block hash -> blocks held with it

    def __len__(self) -> int:
        return len(self._held)

    def clear(self) -> None:
        self._ours.clear()
        self._count.clear()
        self._held.clear()

    def apply(self, event: KVEvent) -> None:
        """Apply one event; raises UnknownParent or ValueError for one that cannot be applied (the caller
        then resynchronises)."""
        if isinstance(event, BlockStored):
            self._store(event)
        elif isinstance(event, BlockRemoved):
            for h in event.block_hashes:
                self._remove(h)
        elif isinstance(event, AllBlocksCleared):
            self.clear()

    def _store(self, event: BlockStored) -> None:
        bs = event.block_size
        if bs < 1 or len(event.token_ids) != bs * len(event.block_hashes):
            raise ValueError(f"{len(event.token_ids)} tokens for {len(event.block_hashes)} blocks of {bs}")
        if self.block_size is None:
            self.block_size = bs
        elif bs != self.block_size:
            raise ValueError(f"block size changed from {self.block_size} to {bs}")
        if event.parent_block_hash is None:
            parent = 0
        else:
            known = self._ours.get(event.parent_block_hash)
            if known is None:
                raise UnknownParent("a stored block's parent is not in the index")
            parent = known
        for i, vllm_hash in enumerate(event.block_hashes):
            parent = next_hash(parent, event.token_ids[i * bs : (i + 1) * bs])
            self._ours[vllm_hash] = parent
            self._count[vllm_hash] = self._count.get(vllm_hash, 0) + 1
            self._held[parent] = self._held.get(parent, 0) + 1

    def _remove(self, vllm_hash: VllmHash) -> None:
        ours = self._ours.get(vllm_hash)
        if ours is None:
            return  # stored before we listened: nothing to forget
        left = self._count[vllm_hash] - 1
        if left:
            self._count[vllm_hash] = left
        else:
            del self._count[vllm_hash], self._ours[vllm_hash]
        held = self._held[ours] - 1
        if held:
            self._held[ours] = held
        else:
            del self._held[ours]

    def match_blocks(self, prefix_hashes: Sequence[int], block_size: int) -> int:
        """Leading blocks of a prompt (its `prefix_hashes` at `block_size` tokens a block) held here; 0 when
        the block sizes differ."""
        if block_size != self.block_size:
            return 0
        n = 0
        for h in prefix_hashes:
            if h not in self._held:
                break
            n += 1
        return n
