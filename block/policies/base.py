"""The policy interface shared by the live router and the cluster simulator.

A policy only chooses. Everything it knows arrives in one decision's `Candidates`: read-only
`InstanceView`s that the data layer (`block.fleet`, in the router and the simulator alike) keeps up to
date, and the forecasts this decision made for them, so the same policy object runs unchanged live and
in simulation, and concurrent decisions never see each other's forecasts.

Adding a policy is one file in this package: subclass `Policy`, give it a `name`, decorate it
with `@register`, and it is importable by name everywhere (`--policy NAME`).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from block.request import Forecast, RoutingRequest


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

    def routed_in_last(self, seconds: float, now: float) -> int: ...

    def cached_prefix_blocks(self, request: RoutingRequest) -> int:
        """Leading full blocks of the request's prompt (`request.prefix_hashes`) this instance is
        believed to hold in its prefix cache: from the engine's snapshot for Block engines, from the
        router's own record of what it routed where otherwise; 0 when unknown."""
        ...


class Candidates:
    """One decision's instances, in the data layer's order, with the forecasts made for them.

    Iterating gives the views. `forecasts` is aligned with them; it is None when the policy wants none,
    and an entry is None where a forecast is missing (predictor late or down, budget spent)."""

    __slots__ = ("forecasts", "views")

    def __init__(
        self, views: Sequence[InstanceView], forecasts: Sequence[Forecast | None] | None = None
    ) -> None:
        if forecasts is not None and len(forecasts) != len(views):
            raise ValueError("one forecast (or None) per candidate")
        self.views = views
        self.forecasts = forecasts

    def __iter__(self) -> Iterator[InstanceView]:
        return iter(self.views)

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, index: int) -> InstanceView:
        return self.views[index]

    def forecast_for(self, view: InstanceView) -> Forecast | None:
        """This decision's forecast for `view` (None when none was made)."""
        if self.forecasts is not None:
            for v, f in zip(self.views, self.forecasts, strict=True):
                if v is view:
                    return f
        return None


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
        """Instances whose forecast this decision needs (all of them unless the policy samples); they
        are the candidates `choose` then gets."""
        return instances

    def choose(self, request: RoutingRequest, candidates: Candidates, now: float) -> Choice:
        raise NotImplementedError

    # Exact pruning (block/fleet/forecasts.py): a policy that chooses the minimum of a score over its
    # forecasts can say so, and give a lower bound of that score from a lower bound of the forecast's
    # end-to-end latency. The fan-out then forecasts in ascending bound order and stops once the best
    # score beats the next bound: same choice, fewer forecasts. Ties follow the candidates' order.

    def forecast_score(self, forecast: Forecast, view: InstanceView) -> tuple[float, int]:
        """The key `choose` minimises over the candidates (when it uses `score_floor`)."""
        raise NotImplementedError

    def score_floor(
        self, e2e_floor_s: float, view: InstanceView, request: RoutingRequest | None = None
    ) -> tuple[float, int] | None:
        """A key no forecast for `view` whose e2e_s is at least `e2e_floor_s` can beat; None: the
        score admits no such bound (every target is forecast). `request`: the request decided, where
        the bound may depend on it (None: it holds for any)."""
        return None


POLICIES: dict[str, type[Policy]] = {}


def register(cls: type[Policy]) -> type[Policy]:
    if not cls.name or cls.name in POLICIES:
        raise ValueError(f"policy {cls.__name__} needs a unique name (got {cls.name!r})")
    POLICIES[cls.name] = cls
    return cls


def least_requests(instances: Iterable[InstanceView]) -> InstanceView:
    return min(instances, key=lambda v: v.in_flight)
