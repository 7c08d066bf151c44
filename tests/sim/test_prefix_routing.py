"""Requests' prefix identity reaches the simulated router: the trackers keep the router's record of
what went where, so a cache-aware baseline keeps a shared prefix on one instance, as it does live."""

from __future__ import annotations

import numpy as np
import pytest

from block.prefix import chain_hashes
from block.sim import SimRequests
from block.sim.simulator import simulate
from tests.sim.helpers import small_config


def grouped_workload(n: int = 60, groups: int = 3, qps: float = 4.0) -> SimRequests:
    """n requests of `groups` shared 256-token system prompts, each with its own 64-token question."""
    rng = np.random.default_rng(0)
    group = rng.integers(0, groups, size=n)
    hashes = [
        chain_hashes(
            [*range(1000 * int(g), 1000 * int(g) + 256), *range(10**6 + 64 * i, 10**6 + 64 * (i + 1))]
        )
        for i, g in enumerate(group)
    ]
    prompts = np.full(n, 320, dtype=np.int64)
    outputs = np.full(n, 16, dtype=np.int64)
    arrivals = np.arange(n, dtype=np.float64) / qps
    return SimRequests(prompts, outputs, arrivals, prefix_hashes=hashes)


# kv-overlap weighs a cached prefix against the blocks in use: at 8 requests/s the in-flight requests'
# blocks outweigh a group's 16 cached ones (it spreads like round robin), one at a time they do not.
@pytest.mark.parametrize(("policy", "qps"), [("cache-aware", 8.0), ("prefix-load", 8.0), ("kv-overlap", 1.0)])
def test_cache_aware_baselines_keep_a_group_on_one_instance(policy: str, qps: float) -> None:
    reqs = grouped_workload(qps=qps)
    out = simulate(small_config(policy=policy, instances=3), reqs)
    assert all(r.status == 200 for r in out.records)
    hashes = reqs.prefix_hashes
    assert hashes is not None
    by_group: dict[int, set[str]] = {}
    for r in out.records:
        by_group.setdefault(hashes[r.index][0], set()).add(r.instance)
    # after its first request, each group's prefix pulls the rest to the same instance
    assert all(len(instances) == 1 for instances in by_group.values()), by_group
    assert len(set.union(*by_group.values())) > 1  # and the groups are not all on one instance


def test_without_prefix_identity_the_run_is_as_before() -> None:
    reqs = grouped_workload()
    plain = SimRequests(reqs.prompt_tokens, reqs.output_tokens, reqs.arrival_s)
    out = simulate(small_config(policy="cache-aware", instances=3), plain)
    assert len({r.instance for r in out.records}) > 1  # nothing cached anywhere: spread by room
    assert plain.head(10).prefix_hashes is None and len(reqs.head(10).prefix_hashes or ()) == 10
