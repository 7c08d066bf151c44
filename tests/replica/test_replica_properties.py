"""Property tests of the replica model over random workloads."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from block.replica import Replica, ReplicaConfig, Request
from tests.conftest import make_test_profile

PROFILE = make_test_profile()

configs = st.builds(
    ReplicaConfig,
    max_num_seqs=st.integers(1, 12),
    max_num_batched_tokens=st.integers(16, 256),
    block_size=st.sampled_from([1, 4, 16]),
    num_gpu_blocks=st.integers(24, 120),
    max_model_len=st.just(384),
)
workloads = st.lists(
    st.tuples(st.floats(0, 0.5), st.integers(1, 200), st.integers(1, 120)),  # (arrival gap, prompt, output)
    min_size=1,
    max_size=25,
)


def build(config: ReplicaConfig, workload: list[tuple[float, int, int]]) -> list[Request]:
    t, reqs = 0.0, []
    for i, (gap, prompt, output) in enumerate(workload):
        t += gap
        # keep every request within the cache so it can always run alone
        cap = config.num_gpu_blocks * config.block_size
        prompt = min(prompt, cap - 1)
        output = max(1, min(output, cap - prompt, 384 - prompt))
        reqs.append(Request(f"r{i}", prompt, output, arrival_time=t, expected_output_tokens=output))
    return reqs


def drive(replica: Replica, pending: list[Request], max_steps: int = 50_000, stop_after: int | None = None):
    """Feed arrivals as time passes and step until everything finished (or `stop_after` steps)."""
    pending = sorted(pending, key=lambda r: r.arrival_time)
    steps = 0
    while pending or replica.has_work:
        while pending and pending[0].arrival_time <= replica.now:
            replica.add(pending.pop(0))
        if stop_after is not None and steps == stop_after:
            return pending
        before = replica.now
        out = replica.step()
        if out is None:
            replica.advance_to(pending[0].arrival_time)
        else:
            assert out.end >= before  # virtual time only moves forward
            assert 0 <= replica.kv.free_blocks <= replica.kv.num_blocks
            assert len(out.batch) <= replica.config.max_num_seqs
            assert sum(out.batch.num_new_tokens) <= replica.config.max_num_batched_tokens
        steps += 1
        assert steps < max_steps
    return pending


@settings(max_examples=60, deadline=None)
@given(configs, workloads)
def test_every_request_gets_exactly_its_tokens_and_blocks_all_return(config, workload) -> None:
    reqs = build(config, workload)
    replica = Replica(config, PROFILE)
    drive(replica, reqs)
    assert all(r.num_generated == r.output_tokens for r in reqs)
    assert all(r.finish_time is not None and r.first_token_time <= r.finish_time for r in reqs)
    assert all(r.first_token_time >= r.arrival_time for r in reqs)
    assert replica.kv.free_blocks == replica.kv.num_blocks


@settings(max_examples=60, deadline=None)
@given(configs, workloads, st.integers(0, 60))
def test_rebuilding_from_a_snapshot_mid_run_changes_nothing(config, workload, stop_after) -> None:
    straight = build(config, workload)
    drive(Replica(config, PROFILE), straight)

    resumed = build(config, workload)
    first = Replica(config, PROFILE)
    pending = drive(first, resumed, stop_after=stop_after)
    finished_early = {r.id: r.finish_time for r in resumed if r.is_finished}
    second = Replica.from_snapshot(first.snapshot(), PROFILE)
    assert second.kv.free_blocks == first.kv.free_blocks
    by_id = {r.id: r for r in list(second.running) + list(second.waiting)}
    drive(second, pending)

    for r in straight:
        later = finished_early.get(r.id)
        if later is None:
            later = (
                by_id[r.id].finish_time
                if r.id in by_id
                else next(p.finish_time for p in pending if p.id == r.id)
            )
        assert later == r.finish_time, r.id
