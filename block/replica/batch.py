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
    # The shape (`measure`), from the requests' progress before the step: a
    # decode (one token, after the first) reads its computed + 1 KV tokens; a prefill chunk of n
    # tokens on top of `done` costs n * done + n * (n + 1) / 2 causal (query, key) pairs: its query
    # i (0-based) sees done + i + 1 keys.
    num_tokens: int = 0
    num_decode_seqs: int = 0
    kv_tokens_read: int = 0
    prefill_attention_pairs: int = 0

    def measure(self) -> None:
        """Work out the shape from the scheduled requests (their progress before the step), once the
        batch is formed: one tight pass, cheaper than keeping count while scheduling."""
        num_tokens = num_decode_seqs = kv_read = pairs = 0
        for req, n in zip(self.requests, self.num_new_tokens, strict=False):  # parallel by construction
            num_tokens += n
            done = req.num_computed_tokens
            if n == 1 and req.num_generated > 0:
                num_decode_seqs += 1
                kv_read += done + 1
            else:
                pairs += n * done + n * (n + 1) // 2
        self.num_tokens = num_tokens
        self.num_decode_seqs = num_decode_seqs
        self.kv_tokens_read = kv_read
        self.prefill_attention_pairs = pairs

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
