"""Prefix caching in the simulator: prompts' hashes reach the replicas and the forecasts."""

from __future__ import annotations

from dataclasses import replace

from block.prefix import chain_hashes
from block.sim import simulate
from tests.sim.helpers import signature, small_config, small_workload


def _shared_prompts(n: int = 120):
    """A small workload whose prompts start with one of two 512-token system prompts."""
    base = small_workload(n, qps=15.0, max_prompt=200, max_output=60)
    hashes = []
    for i, p in enumerate(base.prompt_tokens.tolist()):
        tokens = [i % 2] * 512 + [10_000 + i] * p  # a shared system prompt, then the request's own
        hashes.append(chain_hashes(tokens))
    return replace(base, prompt_tokens=base.prompt_tokens + 512, prefix_hashes=hashes)


def test_shared_prefixes_hit_and_shorten_ttft() -> None:
    reqs = _shared_prompts()
    on = simulate(small_config(policy="block", prefix_caching=True), reqs)
    off = simulate(small_config(policy="block", prefix_caching=False), reqs)
    ttft_on = sum(r.ttft_s for r in on.records) / len(on.records)
    ttft_off = sum(r.ttft_s for r in off.records) / len(off.records)
    assert ttft_on < 0.8 * ttft_off  # most of each prompt is served from the cache
    assert (
        simulate(small_config(policy="block", prefix_caching=True), reqs).records == on.records
    )  # deterministic


def test_without_hashes_caching_changes_nothing() -> None:
    reqs = small_workload(150)
    on = simulate(small_config(policy="block", prefix_caching=True), reqs)
    off = simulate(small_config(policy="block", prefix_caching=False), reqs)
    assert signature(on) == signature(off)
