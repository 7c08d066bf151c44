"""The router's approximate prefix index: bounded by the instance's KV blocks, least recently routed
blocks evicted first (a prompt's tail before its head), a match is the longest recorded prefix."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from block.fleet.prefix_index import PrefixIndex
from block.fleet.tracker import InstanceTracker, router_tracker
from block.prefix import chain_hashes
from block.replica import ReplicaConfig
from block.request import RoutingRequest

prompts = st.lists(st.lists(st.integers(0, 3), min_size=0, max_size=12), min_size=1, max_size=30)


def hashes_of(tokens: list[int]) -> tuple[int, ...]:
    return chain_hashes(tokens, block_size=2)


@settings(max_examples=200, deadline=None)
@given(prompts, st.integers(0, 20))
def test_never_more_than_the_bound(routed: list[list[int]], capacity: int) -> None:
    index = PrefixIndex(capacity)
    for tokens in routed:
        index.record(hashes_of(tokens))
        assert len(index) <= capacity


@settings(max_examples=200, deadline=None)
@given(prompts, st.integers(1, 20), st.lists(st.integers(0, 3), max_size=12))
def test_match_is_the_longest_recorded_prefix(
    routed: list[list[int]], capacity: int, probe: list[int]
) -> None:
    index = PrefixIndex(capacity)
    for tokens in routed:
        index.record(hashes_of(tokens))
    wanted = hashes_of(probe)
    n = index.match(wanted)
    assert all(h in index for h in wanted[:n])
    assert n == len(wanted) or wanted[n] not in index


@settings(max_examples=200, deadline=None)
@given(prompts, st.integers(1, 20))
def test_a_recorded_block_keeps_its_parent(routed: list[list[int]], capacity: int) -> None:
    """Tails go before heads: whatever is left of a prompt is a prefix of it, so every block the
    index holds is reachable by a match (none is orphaned by its parent's eviction)."""
    index = PrefixIndex(capacity)
    for tokens in routed:
        index.record(hashes_of(tokens))
    last = hashes_of(routed[-1])
    held = [h in index for h in last]
    assert held == sorted(held, reverse=True)  # True... then False...
    assert index.match(last) == sum(held)


def test_least_recently_routed_blocks_go_first() -> None:
    index = PrefixIndex(4)
    index.record((1, 2))
    index.record((3, 4))
    index.record((1,))  # touched again: now newer than 3 and 4
    index.record((5, 6))  # two must go: 2 (routed first), then 4 (a tail before its head 3); not 1
    assert [h in index for h in (1, 2, 3, 4, 5, 6)] == [True, False, True, False, True, True]
    assert index.match((1, 2)) == 1 and index.match((3, 4)) == 1
    assert index.match((5, 6, 7)) == 2
    assert index.match((2, 5)) == 0


def test_a_prompt_longer_than_the_bound_keeps_its_head() -> None:
    index = PrefixIndex(3)
    index.record((10, 11, 12, 13, 14))
    assert index.match((10, 11, 12, 13, 14)) == 3
    assert len(index) == 3


def test_resize_evicts_down_to_the_new_bound_at_once() -> None:
    index = PrefixIndex(10)
    index.record(tuple(range(8)))
    index.resize(2)
    assert len(index) == 2 and index.match(tuple(range(8))) == 2


def test_the_tracker_records_what_it_routed_within_the_instances_blocks() -> None:
    cfg = ReplicaConfig(block_size=16, num_gpu_blocks=6, max_num_batched_tokens=64, max_model_len=96)
    tracker = router_tracker("a", None, cfg, default_output_tokens=8)
    first = chain_hashes(list(range(64)))  # 4 blocks
    assert tracker.cached_prefix_blocks(RoutingRequest(64, 8, prefix_hashes=first)) == 0
    tracker.on_routed(RoutingRequest(64, 8, id="r1", prefix_hashes=first), 0.0)
    follow_up = chain_hashes([*range(64), *range(100, 132)])  # the same 4 blocks, then 2 more
    assert tracker.cached_prefix_blocks(RoutingRequest(96, 8, prefix_hashes=follow_up)) == 4
    tracker.on_routed(RoutingRequest(96, 8, id="r2", prefix_hashes=follow_up), 0.1)
    assert tracker.prefix_index is not None and len(tracker.prefix_index) == 6  # the instance's blocks
    other = chain_hashes(list(range(500, 532)))
    tracker.on_routed(RoutingRequest(32, 8, id="r3", prefix_hashes=other), 0.2)
    assert len(tracker.prefix_index) == 6
    assert tracker.cached_prefix_blocks(RoutingRequest(96, 8, prefix_hashes=follow_up)) == 4  # tail gone


def test_without_an_index_or_hashes_nothing_is_cached() -> None:
    plain = InstanceTracker("a", None, ReplicaConfig())
    hashes = chain_hashes(list(range(32)))
    plain.on_routed(RoutingRequest(32, 8, id="r", prefix_hashes=hashes), 0.0)
    assert plain.cached_prefix_blocks(RoutingRequest(32, 8, prefix_hashes=hashes)) == 0
    indexed = router_tracker("b", None, ReplicaConfig(), default_output_tokens=8)
    indexed.on_routed(RoutingRequest(32, 8, id="r", prefix_hashes=hashes), 0.0)
    assert indexed.cached_prefix_blocks(RoutingRequest(32, 8)) == 0  # a request without identity
