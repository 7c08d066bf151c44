"""Prefix caching in the replica model: vLLM V1's rules, and the model unchanged where nothing is shared."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from block.prefix import chain_hashes
from block.replica import Replica, ReplicaConfig, Request
from block.replica.kv_cache import PrefixKVCache
from tests.conftest import make_test_profile
from tests.replica.test_replica_properties import build, configs, workloads

PROFILE = make_test_profile()
families = st.lists(st.tuples(st.integers(0, 3), st.floats(0, 1)), min_size=25, max_size=25)


def share(reqs: list[Request], block_size: int, drawn: list[tuple[int, float]]) -> list[Request]:
    """Give each prompt hashes that share a drawn fraction of its tokens with its family's prompt."""
    for i, (q, (family, frac)) in enumerate(zip(reqs, drawn, strict=False)):
        shared = int(frac * q.prompt_tokens)
        tokens = [
            family * 10_000 + t if t < shared else (i + 10) * 10_000 + t for t in range(q.prompt_tokens)
        ]
        q.prefix_hashes = chain_hashes(tokens, block_size)
    return reqs


def run_all(replica: Replica, reqs: list[Request], check=None) -> list[tuple]:
    """Step to the end; returns every step's (start, end, [(id, tokens)]): the whole schedule."""
    pending = sorted(reqs, key=lambda r: r.arrival_time)
    trace = []
    for _ in range(100_000):
        while pending and pending[0].arrival_time <= replica.now:
            replica.add(pending.pop(0))
        out = replica.step()
        if out is None:
            if not pending:
                return trace
            replica.advance_to(pending[0].arrival_time)
            continue
        trace.append(
            (
                out.start,
                out.end,
                [(q.id, n) for q, n in zip(out.batch.requests, out.batch.num_new_tokens, strict=True)],
            )
        )
        if check is not None:
            check(replica)
    raise AssertionError("did not finish")


def check_pool(replica: Replica) -> None:
    """The free count is the blocks nobody holds, and the free queue holds exactly those."""
    kv = replica.kv
    assert isinstance(kv, PrefixKVCache)
    everyone = [*replica.running, *replica.waiting]
    held = {id(b): b for q in everyone for b in q.held}
    anonymous = sum(q.num_blocks - len(q.held) for q in everyone)
    assert kv.free_blocks == kv.num_blocks - anonymous - len(held)
    for b in held.values():
        assert b.ref == sum(1 for q in everyone for x in q.held if x is b)
        assert b.pos == -1
    p = kv.prefix
    assert p.end - p.front - len(p.removed) == kv.free_blocks  # the free queue is the free blocks
    assert all(p.front <= x < p.end for x in p.removed)
    free = [b for cs in p.table.values() for b in cs if b.ref == 0 and b.pos >= p.front]
    positions = [b.pos for b in free]
    assert len(set(positions)) == len(positions) and not set(positions) & set(p.removed)
    assert all(x < p.end for x in positions)
    # the free queue in eviction order, each record with the anonymous free blocks in front of it
    expected, at = [], p.front
    for b in sorted(free, key=lambda b: b.pos):
        taken_back = sum(1 for x in p.removed if at <= x < b.pos)
        expected.append((b.pos - at - taken_back, b.hash))
        at = b.pos + 1
    assert p.free_queue() == expected


@settings(max_examples=60, deadline=None)
@given(configs, workloads)
def test_without_prefix_hashes_the_schedule_is_unchanged(config, workload) -> None:
    off = Replica(replace(config, enable_prefix_caching=False), PROFILE)
    on = Replica(replace(config, enable_prefix_caching=True), PROFILE)
    assert run_all(off, build(config, workload)) == run_all(on, build(config, workload))


@settings(max_examples=60, deadline=None)
@given(configs, workloads)
def test_unshared_prefixes_change_nothing_without_preemption(config, workload) -> None:
    """Distinct prompts: no hits, the same schedule, unless a preempted request re-hits its own prompt."""
    off = Replica(replace(config, enable_prefix_caching=False), PROFILE)
    on = Replica(replace(config, enable_prefix_caching=True), PROFILE)
    reqs = share(build(config, workload), config.block_size, [(i + 4, 0.0) for i in range(25)])
    expected = run_all(off, build(config, workload))
    got = run_all(on, reqs)
    if off.num_preemptions == 0:
        assert got == expected
        assert on.kv.hits == 0


class RecordingKVCache(PrefixKVCache):
    """Checks at every admission that the hit is a prefix of blocks computed before, short of the end."""

    __slots__ = ("stored",)

    def __init__(self, num_blocks: int, block_size: int) -> None:
        super().__init__(num_blocks, block_size)
        self.stored: set[int] = set()

    def allocate(self, request, num_new_tokens, hit=None) -> bool:
        if hit:
            assert [b.hash for b in hit] == list(request.prefix_hashes[: len(hit)])
            assert {b.hash for b in hit} <= self.stored
            assert len(hit) <= (request.num_tokens - 1) // self.block_size
        return super().allocate(request, num_new_tokens, hit)

    def _register(self, request, done) -> None:
        super()._register(request, done)
        self.stored.update(b.hash for b in request.held)


@settings(max_examples=80, deadline=None)
@given(configs, workloads, families)
def test_hits_are_what_was_stored_and_the_pool_adds_up(config, workload, drawn) -> None:
    config = replace(config, enable_prefix_caching=True)
    replica = Replica(config, PROFILE)
    replica.kv = RecordingKVCache(config.num_gpu_blocks, config.block_size)
    reqs = share(build(config, workload), config.block_size, drawn)
    run_all(replica, reqs, check_pool)
    assert 0 <= replica.kv.hits <= replica.kv.queries
    assert all(q.is_finished for q in reqs)
    assert all(q.num_cached_tokens % config.block_size == 0 for q in reqs)


def test_a_cached_prompt_is_prefilled_from_its_last_block() -> None:
    """The second identical prompt computes only what is past the cached full blocks, at least one token."""
    cfg = ReplicaConfig(max_num_batched_tokens=512, block_size=16, num_gpu_blocks=64)
    replica = Replica(cfg, PROFILE)
    hashes = chain_hashes(list(range(64)), 16)
    first = Request("a", 64, 2, prefix_hashes=hashes)
    replica.add(first)
    while not first.is_finished:
        replica.step()
    second = Request("b", 64, 2, prefix_hashes=hashes)
    replica.add(second)
    out = replica.step()
    assert out.batch.num_new_tokens == [16]  # 3 of 4 full blocks hit: the last token must be computed
    assert second.num_cached_tokens == 48
    assert replica.kv.hits == 48 and replica.kv.queries == 128


def test_eviction_takes_the_least_recently_freed_tail_first() -> None:
    """Freed blocks are reused from the queue's front, a prompt's last block first."""
    cfg = ReplicaConfig(max_num_batched_tokens=512, block_size=4, num_gpu_blocks=6, max_model_len=24)
    replica = Replica(cfg, PROFILE)
    hashes = chain_hashes(list(range(16)), 4)
    a = Request("a", 16, 1, prefix_hashes=hashes)  # 4 blocks, all with an identity
    replica.add(a)
    replica.step()
    assert a.is_finished and replica.kv.free_blocks == 6
    b = Request("b", 12, 1)  # 3 anonymous blocks: the 2 never used, then a's last block (evicted)
    replica.add(b)
    replica.step()
    c = Request("c", 17, 1, prefix_hashes=hashes)
    assert len(replica.kv.hit(c)) == 3
