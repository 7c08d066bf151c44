"""One benchmark request as a workload describes it: a prompt and the output length to ask for."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Sample:
    """A request of a workload.

    `prompt` is real text for ShareGPT and text synthesised to exactly `prompt_tokens` tokens for
    length-only traces. `output_tokens` is the reference output length the benchmark asks for.
    """

    prompt: str
    prompt_tokens: int
    output_tokens: int
    arrival_s: float | None = None  # seconds from trace start, when the dataset records it
    reference_output: str | None = None  # ShareGPT's first answer, when known
    # chained hashes of the prompt's full blocks at block.prefix.PREFIX_BLOCK_SIZE tokens per block
    # (block.prefix.chain_hashes); () when the workload gives prompts no prefix identity
    prefix_hashes: tuple[int, ...] = ()
    # Multi-turn sessions (block.workload.sessions): the session this request belongs to and its turn
    # (0 first). A turn is sent only after the previous turn of its session finished plus a think time.
    session: int | None = None
    turn: int = 0
