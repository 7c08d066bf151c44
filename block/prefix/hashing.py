"""Block hashes of a prompt, chained as vLLM V1 identifies cached blocks.

Only full blocks have an identity. Block i's hash covers its own tokens and block i-1's hash, so two
prompts share block i's hash exactly when they share every token up to the end of block i: a lookup of
the longest cached prefix is a walk along the list until the first miss.

The hash is Python's tuple hash over ints, which does not depend on PYTHONHASHSEED (only str and bytes
hashing is salted), so every process (router, engine emulator, simulator) computes the same values.
A `salt` starts the chain: two requests with different salts never share a block, which is how a
workload keeps resampled copies of one prompt from inventing cache hits. vLLM's own hashes (for its KV
events) are a different function of the same tokens; an index fed by vLLM computes those instead.
"""

from __future__ import annotations

from collections.abc import Sequence

PREFIX_BLOCK_SIZE = 16  # tokens per block the workloads hash at: vLLM's default block size on GPUs


def next_hash(parent: int, block_tokens: Sequence[int]) -> int:
    """The hash of one full block whose predecessor's hash is `parent` (the salt for the first)."""
    return hash((parent, *block_tokens))


def chain_hashes(
    token_ids: Sequence[int], block_size: int = PREFIX_BLOCK_SIZE, salt: int = 0
) -> tuple[int, ...]:
    """The hash of each full block of `token_ids`; a trailing partial block has none."""
    if block_size < 1:
        raise ValueError("block_size must be >= 1")
    hashes: list[int] = []
    parent = salt
    for end in range(block_size, len(token_ids) + 1, block_size):
        parent = next_hash(parent, token_ids[end - block_size : end])
        hashes.append(parent)
    return tuple(hashes)
