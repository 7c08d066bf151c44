"""How long each request in a snapshot will run: the output length a forecast plans with.

Rules (in order):

1. the request's `expected_output_tokens` when the snapshot has it (the router's plan);
2. otherwise `length_of(state)` when given (e.g. the length estimator), else `default_output_tokens`;
3. unknown territory: a request that has already produced at least that many tokens is assumed to
   finish after `overrun_tokens` more (default 16, i.e. one KV block): it is past its plan, so the
   plan says nothing, and a small constant keeps one long straggler from dominating a forecast;
4. the total is capped so that prompt + output fits `max_model_len` and the whole KV cache (an
   engine stops a request there), and is always at least one more token than already produced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from block.replica.config import ReplicaConfig
from block.replica.snapshot import RequestState

# what the simulator needs of a request: (id, prompt, total output, computed, generated)
Plan = tuple[str, int, int, int, int]

DEFAULT_OUTPUT_TOKENS = 256
OVERRUN_TOKENS = 16


@dataclass(frozen=True, slots=True)
class LengthRule:
    default_output_tokens: int = DEFAULT_OUTPUT_TOKENS
    overrun_tokens: int = OVERRUN_TOKENS
    length_of: Callable[[RequestState], int] | None = None

    def total_output(self, s: RequestState, config: ReplicaConfig) -> int:
        if s.expected_output_tokens is not None:
            total = s.expected_output_tokens
        elif self.length_of is not None:
            total = int(self.length_of(s))
        else:
            total = self.default_output_tokens
        if s.output_tokens >= total:
            total = s.output_tokens + max(1, self.overrun_tokens)
        return max(min(total, max_output(s.prompt_tokens, config)), s.output_tokens + 1)

    def plan_all(self, states: Iterable[RequestState], config: ReplicaConfig) -> list[Plan]:
        """`total_output` for many requests of one instance: a forecast plans every request it loads,
        so this is one loop with the constants hoisted (the same rules, in the same order)."""
        cap = config.room
        default, overrun, length_of = self.default_output_tokens, max(1, self.overrun_tokens), self.length_of
        plans: list[Plan] = []
        for s in states:
            g = s.output_tokens
            total = s.expected_output_tokens
            if total is None:
                total = default if length_of is None else int(length_of(s))
            if g >= total:
                total = g + overrun
            room = cap - s.prompt_tokens  # min(total, max(1, room))
            if total > room:
                total = room if room > 1 else 1
            plans.append((s.id, s.prompt_tokens, total if total > g else g + 1, s.computed_tokens, g))
        return plans


def max_output(prompt_tokens: int, config: ReplicaConfig) -> int:
    """The most tokens a request can generate on this instance."""
    capacity = config.num_gpu_blocks * config.block_size
    return max(1, min(config.max_model_len, capacity) - prompt_tokens)
