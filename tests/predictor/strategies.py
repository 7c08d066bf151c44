"""Hypothesis strategies for snapshots: reached by running the replica, or built by hand."""

from __future__ import annotations

from hypothesis import strategies as st

from block.replica import Replica, ReplicaConfig, Request, RequestState, Snapshot
from tests.conftest import make_test_profile

PROFILE = make_test_profile()

configs = st.builds(
    ReplicaConfig,
    max_num_seqs=st.integers(1, 12),
    max_num_batched_tokens=st.integers(8, 160),
    block_size=st.sampled_from([1, 4, 16]),
    num_gpu_blocks=st.integers(16, 100),
    max_model_len=st.just(384),
)


def _fit(config: ReplicaConfig, prompt: int, output: int) -> tuple[int, int]:
    cap = min(config.num_gpu_blocks * config.block_size, config.max_model_len)
    prompt = min(prompt, cap - 1)
    return prompt, max(1, min(output, cap - prompt))


@st.composite
def reached_snapshots(draw) -> Snapshot:
    """A replica's own state after some steps: prefills in progress, preemptions, a full cache."""
    config = draw(configs)
    replica = Replica(config, PROFILE)
    n = draw(st.integers(0, 24))
    for i in range(n):
        prompt, output = _fit(config, draw(st.integers(1, 200)), draw(st.integers(1, 150)))
        known = draw(st.booleans())
        replica.add(Request(f"r{i}", prompt, output, expected_output_tokens=output if known else None))
    for _ in range(draw(st.integers(0, 80))):
        if replica.step() is None:
            break
    replica.now = draw(st.sampled_from([0.0, 12.5]))
    return replica.snapshot()


@st.composite
def odd_snapshots(draw) -> Snapshot:
    """Hand-built states the replica would rarely reach: prefills mid-queue, unknown lengths, overruns."""
    config = draw(configs)
    cap_blocks = config.num_gpu_blocks
    running, waiting, used = [], [], 0
    for i in range(draw(st.integers(0, 14))):
        prompt, _ = _fit(config, draw(st.integers(1, 150)), 1)
        g = draw(st.integers(0, 60))
        g = max(0, min(g, min(config.max_model_len, cap_blocks * config.block_size) - prompt - 1))
        total = prompt + g
        c = total - 1 if g > 0 and draw(st.booleans()) else draw(st.integers(0, total - 1))
        blocks = -(-c // config.block_size)
        expected = draw(st.one_of(st.none(), st.integers(1, 120)))
        state = RequestState(f"s{i}", 0.0, prompt, c, g, expected)
        if used + blocks + 1 > cap_blocks:
            continue
        used += blocks
        if c == 0 and draw(st.booleans()):
            waiting.append(state)
        else:
            running.append(state)
    return Snapshot(config, draw(st.sampled_from([0.0, 3.25])), running, waiting)
