"""The ceiling of prefix caching: hits from the whole fleet's computed blocks, still charged to KV."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings

from block.prefix import chain_hashes
from block.replica import Replica, ReplicaConfig, Request
from block.replica.ceiling_cache import CeilingKVCache, FleetBlocks
from tests.conftest import make_test_profile
from tests.replica.test_prefix_cache import families, run_all, share
from tests.replica.test_replica_properties import build, configs, workloads

PROFILE = make_test_profile()


def ceiling_replica(config: ReplicaConfig, fleet: FleetBlocks) -> Replica:
    return Replica(config, PROFILE, CeilingKVCache(config.num_gpu_blocks, config.block_size, fleet))


def finish(replica: Replica, request: Request) -> None:
    replica.add(request)
    for _ in range(1_000):
        if request.is_finished:
            return
        replica.step()
    raise AssertionError("did not finish")


def test_a_prompt_computed_on_one_instance_is_a_hit_on_another() -> None:
    cfg = ReplicaConfig(max_num_batched_tokens=512, block_size=16, num_gpu_blocks=64)
    fleet = FleetBlocks()
    a, b = ceiling_replica(cfg, fleet), ceiling_replica(cfg, fleet)
    hashes = chain_hashes(list(range(64)), 16)
    finish(a, Request("first", 64, 2, prefix_hashes=hashes))
    again = Request("again", 64, 2, prefix_hashes=hashes)
    b.add(again)
    out = b.step()
    assert out is not None and out.batch.num_new_tokens == [
        16
    ]  # 3 of 4 blocks cached: one token always computed
    assert again.num_cached_tokens == 48
    assert (b.kv.queries, b.kv.hits) == (64, 48)
    assert b.kv.used_blocks == 4  # the three hit blocks are its own: free of compute, not of memory
    finish(b, again)
    assert b.kv.free_blocks == b.kv.num_blocks


@settings(max_examples=60, deadline=None)
@given(configs, workloads)
def test_unshared_prompts_run_as_without_caching(config, workload) -> None:
    """Nothing computed before matches: no hits, the schedule of a cache-less replica, step for step
    (a recompute after a preemption re-hits its own prompt, as with a real cache: left out)."""
    off = Replica(replace(config, enable_prefix_caching=False), PROFILE)
    ceiling = ceiling_replica(config, FleetBlocks())
    reqs = share(build(config, workload), config.block_size, [(i + 4, 0.0) for i in range(25)])
    expected = run_all(off, build(config, workload))
    got = run_all(ceiling, reqs)
    if off.num_preemptions == 0:
        assert got == expected
        assert ceiling.kv.hits == 0


@settings(max_examples=80, deadline=None)
@given(configs, workloads, families)
def test_hits_are_blocks_computed_before_and_every_block_returns(config, workload, drawn) -> None:
    replica = ceiling_replica(config, FleetBlocks())
    reqs = share(build(config, workload), config.block_size, drawn)

    def check(r: Replica) -> None:
        held = sum(q.num_blocks for q in [*r.running, *r.waiting])
        assert r.kv.free_blocks == r.kv.num_blocks - held

    run_all(replica, reqs, check)
    assert all(q.is_finished for q in reqs)
    assert replica.kv.free_blocks == replica.kv.num_blocks
    assert 0 <= replica.kv.hits <= replica.kv.queries
    for q in reqs:  # a hit is a prefix some other request admitted no later had (and so computed)
        cached = q.num_cached_tokens // config.block_size
        assert q.num_cached_tokens % config.block_size == 0
        assert cached <= (q.prompt_tokens - 1) // config.block_size
        before = [p for p in reqs if p is not q and p.first_scheduled_time <= q.first_scheduled_time]
        assert cached <= max((common_prefix(p.prefix_hashes, q.prefix_hashes) for p in before), default=0)


def common_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n
