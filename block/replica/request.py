"""A request as an engine sees it: prompt, progress, and the output it will produce."""

from __future__ import annotations

from dataclasses import dataclass

from block.replica.prefix_cache import CachedBlock


@dataclass(slots=True, eq=False)
class Request:
    """Progress follows vLLM v1: `num_computed_tokens` counts tokens whose KV is in the cache.

    A request holds `num_tokens = prompt + generated` tokens. Each step computes some of the
    missing `num_tokens - num_computed_tokens`; a step that computes the last of them samples one
    new token. A prefill is therefore a step (or chunks over several steps) covering the prompt, and
    a decode is a step computing exactly one token. After a preemption (recompute) the cache is
    dropped, `num_computed_tokens` returns to 0 and the prompt and all generated tokens are
    prefilled again before the next token comes out (with prefix caching, from the longest prefix of
    its prompt still cached: kv_cache.PrefixKVCache).
    """

    id: str
    prompt_tokens: int
    output_tokens: int  # tokens it will generate in all: the truth in an engine, a guess in a forecast
    arrival_time: float = 0.0
    expected_output_tokens: int | None = None  # the router's plan, reported back in snapshots
    num_computed_tokens: int = 0
    num_generated: int = 0
    num_blocks: int = 0  # KV-cache blocks it holds
    num_preemptions: int = 0
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    finish_time: float | None = None
    aborted: bool = False
    # prefix caching (kv_cache.PrefixKVCache): the chained hashes of the prompt's full blocks, the
    # cached records it holds (its leading blocks), and the prompt tokens its last admission found cached
    prefix_hashes: tuple[int, ...] = ()
    held: list[CachedBlock] | tuple[()] = ()
    num_cached_tokens: int = 0

    def __post_init__(self) -> None:
        if self.prompt_tokens < 1:
            raise ValueError(f"request {self.id}: prompt_tokens must be >= 1")
        if self.output_tokens < 1:
            raise ValueError(f"request {self.id}: output_tokens must be >= 1")

    @property
    def num_tokens(self) -> int:
        return self.prompt_tokens + self.num_generated

    @property
    def num_missing_tokens(self) -> int:
        return self.num_tokens - self.num_computed_tokens

    @property
    def is_decoding(self) -> bool:
        return self.num_generated > 0 and self.num_missing_tokens == 1

    @property
    def is_finished(self) -> bool:
        return self.finish_time is not None

    @property
    def remaining_output_tokens(self) -> int:
        return self.output_tokens - self.num_generated
