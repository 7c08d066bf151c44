"""Paged KV cache accounting: which request holds how many fixed-size blocks.

Block only needs counts, not block tables: the forecast depends on when allocation fails, never
on which physical block a token lands in. (Prefix caching is not modelled.)

Allocation itself is part of batch formation (Replica.schedule, inlined in its hot loop): a request
about to compute n more tokens needs blocks_for(computed + n) - held more blocks, and fails to grow
when fewer are free. A request always holds at least blocks_for(computed) blocks.
"""

from __future__ import annotations

from block.replica.request import Request


def blocks_for(num_tokens: int, block_size: int) -> int:
    return -(-num_tokens // block_size)


class KVCache:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.free_blocks = num_blocks

    @property
    def used_blocks(self) -> int:
        return self.num_blocks - self.free_blocks

    @property
    def usage(self) -> float:
        return self.used_blocks / self.num_blocks

    def free(self, request: Request) -> None:
        self.free_blocks += request.num_blocks
        request.num_blocks = 0

    def adopt(self, request: Request) -> None:
        """Account for a request rebuilt from a snapshot with its cache already filled."""
        request.num_blocks = blocks_for(request.num_computed_tokens, self.block_size)
        self.free_blocks -= request.num_blocks
