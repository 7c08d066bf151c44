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

Admission and growth are separate operations because prefix caching (not modelled yet) treats them
differently: admission is where a request's cached prefix would be looked up (and its computed
tokens jump ahead), growth is where newly filled blocks would be hashed, and a freed block would stay
cached until evicted. `free_blocks` counts the blocks an allocation may take.

Replica.run_decodes uses `demand` and `append_all` for a run of decode steps. The forecast's
FastReplica (fast_replica.py) does not call this class: it keeps one free count and, for its decode
group, a histogram of when members need a block, with the same arithmetic inlined in its hot loops;
tests/predictor/test_skip_ahead.py keeps it equal to Replica. A change here (prefix caching) needs its
twin there: in `FastReplica.load`, its step's admission loop and `_finish`.
"""

from __future__ import annotations

from collections.abc import Iterable

from block.replica.request import Request


def blocks_for(num_tokens: int, block_size: int) -> int:
    """Blocks that hold `num_tokens` tokens."""
    return -(-num_tokens // block_size)


class KVCache:
    __slots__ = ("num_blocks", "block_size", "free_blocks")

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

    def allocate(self, request: Request, num_new_tokens: int) -> bool:
        """Admit a waiting request to compute `num_new_tokens` tokens; False (nothing taken) when
        too few blocks are free."""
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
