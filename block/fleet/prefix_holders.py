"""Which instances of a fleet may hold a prompt's first block: the request's first block hash -> instances.

Block's affinity (block/policies/predictive.py) sends a request among the instances forecast within the
forecast's error of the best to the one holding most of its prompt, so a decision over a fleet must reach
every instance that holds some of it and whose floor is within that tolerance. Without knowing which do,
the walk (block/fleet/forecasts.py) must treat every instance as one that might: on 1,000 instances that
is most of the fleet. This index narrows it down without looking at the instances.

An instance can hold a block of a prompt only if it holds the prompt's first block (hashes are chained),
and only a request routed there can have put it there. So every request routed is recorded under its
first block hash, and the instances recorded for a hash are a superset of those that hold it, as long as
every request an instance runs was routed by the router that records (one router in front of the fleet:
the simulator with `--routers 1`). A decision checks the instances recorded for its request against their
trackers (`cached_prefix_blocks`) and forgets those that hold nothing of it any more: only a new request
routed there can bring the block back, and that records it again.
"""

from __future__ import annotations


class PrefixHolders:
    __slots__ = ("_by_first",)

    def __init__(self) -> None:
        self._by_first: dict[int, set[str]] = {}  # first block hash -> ids of instances that may hold it

    def record(self, first_hash: int, instance_id: str) -> None:
        """A prompt starting with this block was routed to the instance."""
        holders = self._by_first.get(first_hash)
        if holders is None:
            self._by_first[first_hash] = {instance_id}
        else:
            holders.add(instance_id)

    def may_hold(self, first_hash: int) -> frozenset[str]:
        """The instances that may hold the block (all that do, and perhaps some that no longer do)."""
        return frozenset(self._by_first.get(first_hash, ()))

    def forget(self, first_hash: int, instance_id: str) -> None:
        """The instance holds nothing of prompts starting with this block (its tracker says so)."""
        holders = self._by_first.get(first_hash)
        if holders is not None:
            holders.discard(instance_id)
            if not holders:
                del self._by_first[first_hash]

    def __len__(self) -> int:
        return len(self._by_first)
