"""Prefix identity: which leading blocks of a prompt an instance may already hold in its KV cache.

`hashing` names a prompt's full blocks the way vLLM V1's prefix cache does (a chained hash per block),
so the engine model, the router's indexes and the workloads agree on what "the same prefix" is.
"""

from block.prefix.hashing import PREFIX_BLOCK_SIZE, chain_hashes, next_hash

__all__ = ["PREFIX_BLOCK_SIZE", "chain_hashes", "next_hash"]
