"""The router's side of the simulation: one tracker per instance, and what each policy needs of them."""

from __future__ import annotations

from collections.abc import Sequence

from block.fleet.arrival_log import FleetLog
from block.fleet.prefix_holders import PrefixHolders
from block.fleet.prefix_index import PrefixIndex
from block.fleet.tracker import InstanceTracker, added_delay_for
from block.policies import Policy
from block.profiles import Profile
from block.replica import ReplicaConfig


def needs_snapshots(policy: Policy) -> bool:
    return policy.wants_forecasts or policy.needs_snapshots


def reads_state(policy: Policy) -> bool:
    """Does the choice depend on anything but the policy itself (its counter, its random stream)?"""
    return policy.wants_forecasts or policy.reads_state


def make_trackers(
    n: int,
    profile: Profile | Sequence[Profile],
    config: ReplicaConfig | Sequence[ReplicaConfig],
    policy: Policy,
    anticipate_arrivals: bool = False,
    calibrate: bool = False,
    holders: PrefixHolders | None = None,
) -> list[InstanceTracker]:
    """One tracker per instance; `profile` and `config` one for all or one per instance; `holders`: the
    fleet's record of where prompts' first blocks went, that every tracker adds its routes to."""
    profiles = [profile] * n if isinstance(profile, Profile) else list(profile)
    configs = [config] * n if isinstance(config, ReplicaConfig) else list(config)
    added_delay = added_delay_for(policy)
    fleet = FleetLog(n) if anticipate_arrivals else None  # anticipation at the fleet's rate per instance
    return [
        InstanceTracker(
            instance_id(r),
            profiles[r],
            configs[r],
            added_delay=added_delay,
            anticipate_arrivals=anticipate_arrivals,
            fleet=fleet,
            prefix_index=PrefixIndex(configs[r].num_gpu_blocks),  # as the router's (engines that tell none)
            calibrate=calibrate,
            holders=holders,
        )
        for r in range(n)
    ]


def instance_id(r: int) -> str:
    return f"sim-{r}"
