"""Several independent routers in front of one simulated fleet."""

from __future__ import annotations

from block.sim import simulate
from block.sim.simulator import Cluster
from tests.sim.helpers import signature, small_config, small_workload


def test_one_router_is_the_plain_simulation() -> None:
    workload = small_workload(150, qps=20)
    assert signature(simulate(small_config(policy="block"), workload)) == signature(
        simulate(small_config(policy="block", routers=1), workload)
    )


def test_each_router_sees_only_its_own_routes() -> None:
    config = small_config(policy="block", routers=2, instances=4)
    workload = small_workload(120, qps=20)
    cluster = Cluster(config)
    seen: list[tuple[int, int]] = []

    def hook(c, i, now, candidates, choice) -> None:  # before the request is routed
        seen.append((i, sum(t._routed.recorded for t in c.routers[i % 2].trackers)))

    out = cluster.run(workload, hook)
    assert out.stats["routers"] == 2 and all(r.status == 200 for r in out.records)
    # router k has routed exactly the earlier requests of its own share
    assert all(count == i // 2 for i, count in seen)
    # split round robin, every request routed once and finished where it was sent
    assert all(t.in_flight == 0 for r in cluster.routers for t in r.trackers)
