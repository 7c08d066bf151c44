"""Several routers in front of one simulated fleet (`block simulate --routers R`).

Users scale the router past one core by running several in front of the same engines, the traffic split
among them. Each router is independent: its own policy, its own trackers (the engines' snapshots, polled
on its own, plus only the requests it routed itself, which it alone sees finish) and its own forecasts.
What one router routed reaches the others only through the next snapshots, so decisions made between two
snapshots by different routers do not see each other: the cost of scaling out that this measures.

Requests are split round robin among the routers (request i goes to router i mod R). One router is the
plain simulation, unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from block.fleet.forecasts import Forecasts
from block.fleet.prefix_holders import PrefixHolders
from block.fleet.tracker import InstanceTracker
from block.policies import Policy, make_policy
from block.profiles import Profile
from block.replica import Replica, ReplicaConfig
from block.sim.config import SimConfig
from block.sim.freshness import SnapshotFeed, StepEnd
from block.sim.tracking import make_trackers


class SimRouter:
    """One router's side of the simulation."""

    def __init__(
        self,
        config: SimConfig,
        profiles: Sequence[Profile],
        replica_configs: Sequence[ReplicaConfig],
        replicas: Sequence[Replica],
        step_end: StepEnd,
        seed: int,
    ) -> None:
        self.policy: Policy = make_policy(config.policy, seed=seed, **config.policy_options)
        # Where prompts' first blocks went: complete only when this router routes every request the
        # instances run (prefix_holders.py), so only for a lone router.
        holders = PrefixHolders() if config.routers == 1 and self.policy.wants_forecasts else None
        self.trackers: list[InstanceTracker] = make_trackers(
            len(replicas),
            profiles,
            replica_configs,
            self.policy,
            config.anticipate_arrivals,
            config.calibration,
            holders,
        )
        self.index_of = {t.id: r for r, t in enumerate(self.trackers)}
        self.forecasts = Forecasts(self.policy, holders=holders)  # no deadline, no budget: virtual time
        self.feed = SnapshotFeed(replicas, self.trackers, config.refresh_s, step_end)


def make_routers(
    config: SimConfig,
    profiles: Sequence[Profile],
    replica_configs: Sequence[ReplicaConfig],
    replicas: Sequence[Replica],
    step_end: StepEnd,
) -> list[SimRouter]:
    """`config.routers` routers (each instance its own profile and settings); the first seeded as a lone
    router is, the others after it."""
    return [
        SimRouter(config, profiles, replica_configs, replicas, step_end, config.seed + k)
        for k in range(config.routers)
    ]


def router_of(request_id: str, routers: int) -> int:
    """The router a request goes through (round robin over the workload's order)."""
    return int(request_id) % routers if routers > 1 else 0
