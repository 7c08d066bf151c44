"""One engine step's work: which requests compute how many tokens, and the shape that costs time."""

from __future__ import annotations

from dataclasses import dataclass, field

from block.profiles.profile import BatchShape
from block.replica.request import Request


@dataclass(slots=True)
class Batch:
    requests: list[Request] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)  # parallel to `requests`
    preempted: list[Request] = field(default_factory=list)  # preempted while forming this batch
    # The shape, accumulated by Replica.schedule from the requests' progress before the step: a
    # decode (one token, after the first) reads its computed + 1 KV tokens; a prefill chunk of n
    # tokens on top of `done` costs n * done + n * (n + 1) / 2 causal (query, key) pairs: its query
    # i (0-based) sees done + i + 1 keys.
    num_tokens: int = 0
    num_decode_seqs: int = 0
    kv_tokens_read: int = 0
    prefill_attention_pairs: int = 0

    def __len__(self) -> int:
        return len(self.requests)

    def shape(self) -> BatchShape:
        return BatchShape(
            self.num_tokens,
            len(self.requests),
            self.num_decode_seqs,
            self.kv_tokens_read,
            self.prefill_attention_pairs,
        )
