"""The tracker's view of a Block engine's prefix cache comes from its snapshot (round-tripped as JSON)."""

from __future__ import annotations

import json

import pytest

from block.fleet.tracker import InstanceTracker
from block.prefix import chain_hashes
from block.replica import Replica, ReplicaConfig, Request, Snapshot
from block.request import RoutingRequest
from tests.conftest import make_test_profile

PROFILE = make_test_profile()


def _replica_state(caching: bool) -> Snapshot:
    """One finished prompt (its blocks cached and free), one still decoding (its blocks held)."""
    replica = Replica(ReplicaConfig(num_gpu_blocks=64, enable_prefix_caching=caching), PROFILE)
    done = Request("done", 64, 1, prefix_hashes=chain_hashes(list(range(64))))
    replica.add(done)
    replica.step()
    busy = Request("busy", 40, 50, prefix_hashes=chain_hashes(list(range(1000, 1040))))
    replica.add(busy)
    replica.step()
    return Snapshot.from_dict(json.loads(json.dumps(replica.snapshot().to_dict())))


def test_cached_prefix_blocks_come_from_the_snapshot() -> None:
    tracker = InstanceTracker("a", PROFILE)
    probe = RoutingRequest(96, 10, prefix_hashes=chain_hashes([*range(64), *range(5000, 5032)]))
    assert tracker.cached_prefix_blocks(probe) == 0  # no snapshot yet
    tracker.observe(_replica_state(caching=True), 0.0)
    assert tracker.cached_prefix_blocks(probe) == 4  # the finished prompt's 4 blocks, free but cached
    held = RoutingRequest(40, 10, prefix_hashes=chain_hashes(list(range(1000, 1040))))
    assert tracker.cached_prefix_blocks(held) == 2  # the decoding request's 2 full prompt blocks
    other_size = RoutingRequest(96, 10, prefix_hashes=probe.prefix_hashes, prefix_block_size=32)
    assert tracker.cached_prefix_blocks(other_size) == 0


def test_no_cache_state_with_caching_off() -> None:
    snapshot = _replica_state(caching=False)
    assert snapshot.free_cached is None
    tracker = InstanceTracker("a", PROFILE)
    tracker.observe(snapshot, 0.0)
    assert (
        tracker.cached_prefix_blocks(RoutingRequest(64, 1, prefix_hashes=chain_hashes(list(range(64))))) == 0
    )


def test_a_forecast_on_a_cached_prefix_is_faster() -> None:
    tracker = InstanceTracker("a", PROFILE, added_delay="none")
    tracker.observe(_replica_state(caching=True), 0.0)
    tokens = [*range(64), *range(7000, 7010)]
    cached = tracker.predict(RoutingRequest(74, 4, prefix_hashes=chain_hashes(tokens)), 0.0)
    cold = tracker.predict(RoutingRequest(74, 4, prefix_hashes=chain_hashes([9, *tokens[1:]])), 0.0)
    assert cached is not None and cold is not None
    assert cached.ttft_s < cold.ttft_s


def test_snapshot_hashes_round_trip_packed_or_plain() -> None:
    snapshot = _replica_state(caching=True)
    d = snapshot.to_dict()
    assert isinstance(d["free_cached"], str) and isinstance(d["running"][0]["prefix_hashes"], str)
    again = Snapshot.from_dict(json.loads(json.dumps(d)))
    assert again.free_cached == snapshot.free_cached
    assert again.running[0].prefix_hashes == snapshot.running[0].prefix_hashes
    d["free_cached"] = [list(p) for p in snapshot.free_cached]  # plain JSON lists are read too
    d["running"][0]["prefix_hashes"] = list(snapshot.running[0].prefix_hashes)
    assert Snapshot.from_dict(d).free_cached == snapshot.free_cached
    d["free_cached"] = "not base64!"
    with pytest.raises(ValueError, match="malformed snapshot"):
        Snapshot.from_dict(d)


def test_requests_routed_since_the_snapshot_count_until_a_snapshot_shows_them() -> None:
    tracker = InstanceTracker("a", PROFILE)
    snapshot = _replica_state(caching=True)
    tracker.observe(snapshot, 0.0)
    hashes = chain_hashes(list(range(9000, 9064)))
    asked = RoutingRequest(64, 4, prefix_hashes=hashes)
    assert tracker.cached_prefix_blocks(asked) == 0
    tracker.on_routed(RoutingRequest(64, 4, id="x", prefix_hashes=hashes), 0.01)
    assert tracker.cached_prefix_blocks(asked) == 4  # on its way
    tracker.on_finished("x", 0.02)  # done before any snapshot showed it: cached
    assert tracker.cached_prefix_blocks(asked) == 4
    tracker.observe(snapshot, 0.5)  # a later snapshot is the engine's word (here: it was evicted)
    assert tracker.cached_prefix_blocks(asked) == 0


def test_prefix_sharers_are_the_requests_in_flight_on_the_same_first_block() -> None:
    tracker = InstanceTracker("a", PROFILE)
    busy = RoutingRequest(40, 10, prefix_hashes=chain_hashes(list(range(1000, 1040))))
    assert tracker.prefix_sharers(busy) == 0  # no snapshot, nothing routed
    tracker.observe(_replica_state(caching=True), 0.0)
    assert tracker.prefix_sharers(busy) == 1  # "busy" decodes there; "done" finished (cached, not held)
    done = RoutingRequest(64, 1, prefix_hashes=chain_hashes(list(range(64))))
    assert tracker.prefix_sharers(done) == 0
    tracker.on_routed(RoutingRequest(50, 5, id="next", prefix_hashes=busy.prefix_hashes[:1]), 0.01)
    assert tracker.prefix_sharers(busy) == 2  # routed since the snapshot: it will hold the block too
    tracker.on_finished("busy", 0.02)
    assert tracker.prefix_sharers(busy) == 1
    assert tracker.prefix_sharers(RoutingRequest(40, 10)) == 0  # no prefix identity
