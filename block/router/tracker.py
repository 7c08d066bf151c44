"""The router's trackers: one `InstanceTracker` per instance, with or without forecasts.

Block engines name their step-time profile in /state; for stock vLLM it comes from the router's
`profile` setting. Without one the same tracker keeps the same counts (so every policy sees the same
numbers either way) and makes no forecasts: `block` then falls back to least-requests (counted).
"""

from __future__ import annotations

from collections.abc import Callable

from block.predictor.arrival_log import FleetLog
from block.predictor.tracker import InstanceTracker
from block.profiles.profile import Profile
from block.replica import ReplicaConfig
from block.replica.snapshot import RequestState


def make_tracker(
    id: str,
    profile: Profile | None,
    config: ReplicaConfig | None,
    default_output_tokens: int,
    length_of: Callable[[RequestState], int] | None = None,
    fleet: FleetLog | None = None,
) -> InstanceTracker:
    """With a `fleet` (make_fleet_log), forecasts anticipate the fleet's arrival rate per instance."""
    return InstanceTracker(
        id,
        profile,
        config=config,
        default_output_tokens=default_output_tokens,
        length_of=length_of,
        anticipate_arrivals=fleet is not None and profile is not None,
        fleet=fleet,
    )


def make_fleet_log() -> FleetLog:
    """The routing record all trackers share for anticipated arrivals."""
    return FleetLog()
