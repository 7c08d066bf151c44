"""How much of a workload's prompt text a prefix cache could serve: the ceiling any policy's hit rate meets.

A request's reusable prefix is its longest run of leading blocks whose hashes an earlier request (in list
order) also had: with one instance and a cache that never evicts, exactly those tokens are hits (vLLM
always computes at least the last prompt token, which this ignores).
"""

from __future__ import annotations

from collections.abc import Sequence

from block.prefix import PREFIX_BLOCK_SIZE
from block.workload.sample import Sample


def reusable_tokens(samples: Sequence[Sample], block_size: int = PREFIX_BLOCK_SIZE) -> list[int]:
    """Per request, the prompt tokens in leading blocks an earlier request already had."""
    seen: set[int] = set()
    out = []
    for s in samples:
        hits = 0
        for h in s.prefix_hashes:
            if h not in seen:
                break
            hits += 1
        seen.update(s.prefix_hashes)
        out.append(hits * block_size)
    return out


def reusable_share(samples: Sequence[Sample], block_size: int = PREFIX_BLOCK_SIZE) -> float:
    """The share of all prompt tokens in reusable prefixes (0 for an empty workload)."""
    total = sum(s.prompt_tokens for s in samples)
    return sum(reusable_tokens(samples, block_size)) / total if total else 0.0
