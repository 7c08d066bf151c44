"""Skipping pure-decode steps is exact: bit-identical runs with and without it."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from block.sim import simulate
from tests.sim.helpers import signature, small_config, small_workload


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    qps=st.sampled_from([2.0, 10.0, 40.0]),
    blocks=st.sampled_from([60, 200, 1052]),  # small caches force preemptions and KV-bound runs
    max_seqs=st.sampled_from([4, 48]),
    chunk=st.sampled_from([64, 512]),
    policy=st.sampled_from(["round-robin", "llumnix"]),  # lazy and eager schedules
    noise=st.sampled_from([0.0, 0.05]),
)
def test_fast_forward_is_exact(
    seed: int, qps: float, blocks: int, max_seqs: int, chunk: int, policy: str, noise: float
) -> None:
    reqs = small_workload(60, qps=qps, seed=seed, max_prompt=400, max_output=300)
    kw = dict(
        policy=policy,
        num_gpu_blocks=blocks,
        max_num_seqs=max_seqs,
        max_num_batched_tokens=chunk,
        noise=noise,
        seed=seed,
        instances=2,
    )
    fast = simulate(small_config(**kw, fast_forward=True), reqs)
    slow = simulate(small_config(**kw, fast_forward=False), reqs)
    assert signature(fast) == signature(slow)
    assert fast.stats["steps"] == slow.stats["steps"]
    assert fast.stats["preemptions"] == slow.stats["preemptions"]
