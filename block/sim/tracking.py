"""The router's side of the simulation: one tracker per instance, and what each policy needs of them."""

from __future__ import annotations

from typing import Any

from block.policies import Policy
from block.predictor.tracker import InstanceTracker
from block.profiles import Profile
from block.replica import ReplicaConfig

# Policies whose choice never reads instance state, and those reading only the router's own counts
# (requests routed and in flight). Neither needs snapshots, which saves most of the simulation's work.
_STATELESS = frozenset({"round-robin", "random"})
_ROUTER_COUNTS_ONLY = frozenset({"min-qpm", "least-requests"})


def needs_snapshots(policy: Policy) -> bool:
    flag = getattr(policy, "needs_snapshots", None)
    if flag is not None:
        return bool(flag)
    return policy.wants_forecasts or policy.name not in _STATELESS | _ROUTER_COUNTS_ONLY


def reads_state(policy: Policy) -> bool:
    """Does the choice depend on anything but the policy itself (its counter, its random stream)?"""
    flag = getattr(policy, "reads_state", None)
    if flag is not None:
        return bool(flag)
    return policy.wants_forecasts or policy.name not in _STATELESS


def make_trackers(n: int, profile: Profile, config: ReplicaConfig, policy: Policy) -> list[Any]:
    # The harm term (added delay to others) costs extra runs per forecast; skip it when the policy
    # gives it no weight: the choice is the same either way.
    harm = getattr(policy, "harm_weight", 0.0)
    added_delay = "horizon" if harm else "none"
    return [InstanceTracker(instance_id(r), profile, config, added_delay=added_delay) for r in range(n)]


def instance_id(r: int) -> str:
    return f"sim-{r}"
