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
    # The shape is accumulated as requests are added, i.e. from their progress before the step.
    num_tokens: int = 0
    num_decode_seqs: int = 0
    kv_tokens_read: int = 0
    prefill_attention_pairs: int = 0

    def __len__(self) -> int:
        return len(self.requests)

    def add(self, request: Request, num_tokens: int) -> None:
        self.requests.append(request)
        self.num_new_tokens.append(num_tokens)
        self.num_tokens += num_tokens
        done = request.num_computed_tokens
        if num_tokens == 1 and request.num_generated > 0:
            self.num_decode_seqs += 1
            self.kv_tokens_read += done + 1
        else:
            # causal attention of a chunk: its query i (0-based) sees done + i + 1 keys
            self.prefill_attention_pairs += num_tokens * done + num_tokens * (num_tokens + 1) // 2

    def shape(self) -> BatchShape:
        return BatchShape(
            self.num_tokens,
            len(self.requests),
            self.num_decode_seqs,
            self.kv_tokens_read,
            self.prefill_attention_pairs,
        )
