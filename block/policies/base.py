"""The policy interface shared by the live router and the cluster simulator.

A policy only chooses. Everything it knows about instances arrives in `InstanceView`s that the
data layer (router or simulator) has filled in beforehand, forecasts included, so the same policy
object runs unchanged live and in simulation.

Adding a policy is one file in this package: subclass `Policy`, give it a `name`, decorate it
with `@register`, and it is importable by name everywhere (`--policy NAME`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol


@dataclass(frozen=True, slots=True)
class RoutingRequest:
    prompt_tokens: int
    expected_output_tokens: int  # the length the policy plans with (known, or estimated)
    max_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Forecast:
    """What would happen to a new request on one instance, relative to the moment of routing."""

    ttft_s: float
    e2e_s: float
    queue_delay_s: float  # from routing until its first token is scheduled
    added_delay_s: float  # sum of the finish-time shifts it causes to requests already there


class InstanceView(Protocol):
    """What a policy may know about one instance. Counts already include requests routed since
    the latest snapshot (the data layer folds them in as waiting), so bursts are not blind."""

    id: str
    in_flight: int  # requests routed there and not finished, as the router counts them
    running: int
    waiting: int
    free_blocks: int
    num_gpu_blocks: int
    block_size: int
    waiting_prompt_tokens: int  # prompt tokens of waiting requests still to be prefilled
    forecast: Forecast | None  # set by the data layer when the policy wants forecasts

    def routed_in_last(self, seconds: float, now: float) -> int: ...


@dataclass(frozen=True, slots=True)
class Choice:
    instance: InstanceView
    fallback: bool = False  # True when a forecast was missing and a cheap rule decided


class Policy:
    name: ClassVar[str] = ""
    wants_forecasts: ClassVar[bool] = False
    # What the choice reads, so a data layer can skip work it does not need (the simulator skips
    # snapshots for policies that only read the router's own counts, and all state for blind ones).
    reads_state: ClassVar[bool] = True  # False: depends only on the policy itself (counter, rng)
    needs_snapshots: ClassVar[bool] = True  # False: the router's own counts are enough

    def __init__(self, seed: int | None = None) -> None:
        self.rng = random.Random(seed)

    def forecast_targets(self, instances: Sequence[InstanceView]) -> Sequence[InstanceView]:
        """Instances whose forecast this decision needs (all of them unless the policy samples)."""
        return instances

    def choose(self, request: RoutingRequest, instances: Sequence[InstanceView], now: float) -> Choice:
        raise NotImplementedError


POLICIES: dict[str, type[Policy]] = {}


def register(cls: type[Policy]) -> type[Policy]:
    if not cls.name or cls.name in POLICIES:
        raise ValueError(f"policy {cls.__name__} needs a unique name (got {cls.name!r})")
    POLICIES[cls.name] = cls
    return cls


def least_requests(instances: Sequence[InstanceView]) -> InstanceView:
    return min(instances, key=lambda v: v.in_flight)
