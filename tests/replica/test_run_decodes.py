"""Replica.run_decodes is exactly step() repeated over the pure-decode steps it covers, bit for bit."""

from __future__ import annotations

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from block.profiles import StepNoise
from block.replica import Batch, Replica, ReplicaConfig, Request
from tests.conftest import make_test_profile
from tests.replica.test_replica_properties import build, configs, drive, workloads

PROFILE = make_test_profile()


def is_pure_decode(replica: Replica, batch: Batch) -> bool:
    """Every running request decodes one token; nothing preempted, nothing admitted."""
    return (
        not batch.preempted
        and len(batch.requests) == len(replica.running)
        and all(q.num_generated > 0 for q in batch.requests)
        and all(n == 1 for n in batch.num_new_tokens)
    )


def step_decodes(replica: Replica, until: float, noise: StepNoise | None) -> tuple[list, float | None]:
    """The reference: step() one by one while the next step is a pure decode ending by `until`.
    Returns [(step end, ids that emitted, ids that finished)] and the duration drawn for the next step."""
    steps = []
    while replica.now <= until:
        probe = copy.deepcopy(replica)  # look at the next batch without forming it
        batch = probe.schedule()
        if not batch.requests or not is_pure_decode(probe, batch):
            return steps, None
        d = PROFILE.step_time(batch.shape())
        if noise is not None:
            d = noise.apply(d)
        if replica.now + d > until:
            return steps, d
        out = replica.complete(replica.schedule(), replica.now + d)
        steps.append((out.end, [q.id for q in out.emitted], [q.id for q in out.finished]))
    return steps, None


def state(replica: Replica) -> tuple:
    def req(q: Request) -> tuple:
        return (
            q.id,
            q.num_computed_tokens,
            q.num_generated,
            q.num_blocks,
            q.first_token_time,
            q.finish_time,
            q.num_preemptions,
        )

    return (
        replica.now,
        replica.kv.free_blocks,
        replica.num_preemptions,
        [req(q) for q in replica.running],
        [req(q) for q in replica.waiting],
    )


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    config=configs,
    workload=workloads,
    stop_after=st.integers(0, 60),
    queue_the_rest=st.booleans(),
    horizon=st.floats(0.0, 2.0),
    noisy=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_run_decodes_equals_stepping(
    config: ReplicaConfig,
    workload: list,
    stop_after: int,
    queue_the_rest: bool,
    horizon: float,
    noisy: bool,
    seed: int,
) -> None:
    reqs = build(config, workload)
    replica = Replica(config, PROFILE)
    pending = drive(replica, reqs, stop_after=stop_after)
    if queue_the_rest:  # requests still to arrive wait now: an admission ends a run of decodes too
        for q in pending:
            replica.add(q)
    until = replica.now + horizon
    fast, slow = replica, copy.deepcopy(replica)
    noise_fast = StepNoise(0.1, 0.05, 3.0, seed=seed) if noisy else None
    noise_slow = StepNoise(0.1, 0.05, 3.0, seed=seed) if noisy else None

    run = fast.run_decodes(until, None if noise_fast is None else noise_fast.apply)
    steps, drawn = step_decodes(slow, until, noise_slow)

    got = []
    for span in run.spans:
        for i, end in enumerate(span.ends):
            last = i == len(span.ends) - 1
            got.append((end, [q.id for q in span.requests], [q.id for q in span.finished] if last else []))
    assert got == steps
    assert run.steps == len(steps)
    assert run.next_duration == drawn
    assert state(fast) == state(slow)
    # and both carry on identically (the noise streams are in step too)
    for _ in range(200):
        a = fast.step(None if noise_fast is None else noise_fast.apply)
        b = slow.step(None if noise_slow is None else noise_slow.apply)
        assert (a is None) == (b is None)
        if a is None or b is None:
            break
        assert a.end == b.end
    assert state(fast) == state(slow)


def test_run_decodes_skips_a_long_decode_run_in_one_call() -> None:
    cfg = ReplicaConfig(max_num_seqs=8, max_num_batched_tokens=64, block_size=16, num_gpu_blocks=64)
    replica = Replica(cfg, PROFILE)
    for i in range(3):
        replica.add(Request(f"r{i}", 20, 50 + 10 * i))
    replica.step()  # the prefills: everyone decodes from now on
    ref = copy.deepcopy(replica)
    run = replica.run_decodes(float("inf"))
    assert [len(s.ends) for s in run.spans] == [49, 10, 10]  # one span per completion
    assert [[q.id for q in s.finished] for s in run.spans] == [["r0"], ["r1"], ["r2"]]
    while ref.step() is not None:
        pass
    assert replica.now == ref.now and not replica.running
    assert replica.kv.free_blocks == replica.kv.num_blocks
