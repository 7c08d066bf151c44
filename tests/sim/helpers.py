"""Small workloads and clusters for the simulator tests."""

from __future__ import annotations

import numpy as np

from block.sim import SimConfig, SimRequests


def small_workload(
    n: int = 200, qps: float = 20.0, seed: int = 0, max_prompt: int = 600, max_output: int = 200
) -> SimRequests:
    rng = np.random.default_rng(seed)
    prompts = rng.integers(4, max_prompt, size=n)
    outputs = rng.integers(1, max_output, size=n)
    arrivals = np.cumsum(rng.exponential(1.0 / qps, size=n))
    return SimRequests(prompts.astype(np.int64), outputs.astype(np.int64), arrivals)


def small_config(**overrides: object) -> SimConfig:
    base: dict[str, object] = dict(instances=3, profile="llama-2-7b-a30", policy="round-robin", seed=1)
    base.update(overrides)
    return SimConfig(**base)  # type: ignore[arg-type]


def signature(outcome: object) -> list[tuple]:
    """Everything a run measured, per request: equal signatures mean identical runs."""
    return [(r.instance, r.ttft_s, r.e2e_s, r.output_tokens, tuple(r.itl_s)) for r in outcome.records]  # type: ignore[attr-defined]
