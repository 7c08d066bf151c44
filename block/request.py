"""The routing question and its answer, the values every layer passes around.

`RoutingRequest` is what the router knows of a request when it decides where it goes, and the one shape
a routed request keeps from the parser to the trackers and every request listener (the engine and the
forecast's replay keep their own progress records); `Forecast` is what would happen to it on one
instance. The predictor makes forecasts, the data layer (`block.fleet`)
carries them, the policies compare them: they live here, below all three, so that none of them
depends on another for its own value types.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RoutingRequest:
    prompt_tokens: int
    expected_output_tokens: int  # the length the policy plans with (known, or estimated)
    max_tokens: int | None = None
    id: str = ""  # the router's request id; "" for a what-if question that is never routed
    # chained hashes of the prompt's full blocks (block.prefix.chain_hashes), at prefix_block_size tokens
    # per block; () when unknown: then no instance is assumed to hold any of it
    prefix_hashes: tuple[int, ...] = ()
    prefix_block_size: int = 16


@dataclass(frozen=True, slots=True)
class Forecast:
    """What would happen to a new request on one instance, relative to the moment of routing."""

    ttft_s: float
    e2e_s: float
    queue_delay_s: float  # from routing until its first token is scheduled
    added_delay_s: float  # sum of the finish-time shifts it causes to requests already there
