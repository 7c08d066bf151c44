"""Auto-provisioning in the cluster simulator, with the live router's controller.

Composes the simulator's public pieces without changing them: a `Cluster` is built with
`max_instances` replicas, and
- a filter in front of its policy keeps only the instances the fleet has in rotation (sim_fleet.py);
- a request listener hears of every request routed (with the decision's forecast for the chosen
  instance), feeds the forecast to the controller, brings booted instances into rotation and carries out
  the controller's decisions; and of every request finished (the router learning that it ended), feeds
  measured E2E latencies to the controller and releases a draining instance once its last request is done.
So the controller acts at request arrivals and completions: virtual time has no idle ticks, and a
starting instance joins at the first event after its `startup_delay_s` (with its true ready time
recorded). A request is never moved: scale-down drains, exactly as live.

Forecasts may stop at `forecast_horizon_s` (horizon.py): while an under-provisioned fleet catches up,
queues are deep and a full forecast replays all of them at every arrival on every instance, so the cost
of a run grows with the backlog; the horizon bounds that worst case. Forecasts that finish within it are
unchanged; beyond it, every instance scores the same and the policy's tie-break (fewest in flight)
chooses. (In the Figure 8 setting no forecast reached the default 2 x SLO: the runs are exact.)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from block.fleet.filters import InRotation
from block.fleet.forecasts import Forecasts
from block.fleet.listeners import RequestListener, Routed
from block.provision.controller import SCALE_UP, PoolCounts, ProvisionController, ProvisionSettings
from block.provision.horizon import is_capped, predict_within
from block.provision.sim_fleet import ACTIVE, DRAINING, STARTING, SimFleet
from block.request import RoutingRequest
from block.sim.config import SimConfig
from block.sim.requests import SimRequests
from block.sim.simulator import Cluster, SimOutcome

DEFAULT_STARTUP_DELAY_S = 30.0  # scale-up to serving: VM/container start plus loading a 7B model


@dataclass(frozen=True)
class SimProvisionPlan:
    initial_instances: int
    max_instances: int
    settings: ProvisionSettings | None = None  # None: a static fleet of `initial_instances`
    startup_delay_s: float = DEFAULT_STARTUP_DELAY_S
    forecast_horizon_s: float | None = None  # None: forecasts run until the candidate finishes

    def __post_init__(self) -> None:
        if not 1 <= self.initial_instances <= self.max_instances:
            raise ValueError("need 1 <= initial_instances <= max_instances")
        if self.startup_delay_s < 0:
            raise ValueError("startup_delay_s must be >= 0")
        if self.forecast_horizon_s is not None and not self.forecast_horizon_s > 0:
            raise ValueError("forecast_horizon_s must be > 0 (or None)")
        s = self.settings
        if s is not None and (s.max_instances > self.max_instances or s.min_instances < 1):
            raise ValueError("controller bounds must lie within 1..max_instances of the simulated cluster")


@dataclass
class ProvisionedOutcome:
    outcome: SimOutcome
    plan: SimProvisionPlan
    decisions: list[dict[str, Any]]
    timeline: list[tuple[float, int, int, int]]  # t, active, starting, draining
    instance_seconds: float
    stats: dict[str, Any] = field(default_factory=dict)


class _Driver(RequestListener):
    """Listens to one Cluster run: observations in, fleet transitions out."""

    def __init__(self, cluster: Cluster, plan: SimProvisionPlan, requests: SimRequests) -> None:
        self.cluster = cluster
        self.plan = plan
        self.arrivals: list[float] = requests.arrival_s.tolist()
        self.fleet = SimFleet.build(
            [t.id for t in cluster.trackers], plan.initial_instances, plan.startup_delay_s
        )
        self.controller = None if plan.settings is None else ProvisionController(plan.settings)
        self.open: set[str] = set()  # requests routed and not yet finished
        self.failed_actions = 0
        self.own_capped = 0  # of the forecasts made here (the decisions' own: cluster.forecasts.capped)
        cluster.filters.append(InRotation(lambda: self.fleet.active_ids))
        cluster.forecasts = Forecasts(cluster.policy, horizon_s=plan.forecast_horizon_s)
        cluster.listeners.add(self)
        # Anticipated arrivals split the fleet's rate over the instances in rotation, not all built.
        self.arrival_log = cluster.trackers[0].fleet
        self._count_in_rotation()

    @property
    def capped_forecasts(self) -> int:
        return self.cluster.forecasts.capped + self.own_capped

    def _count_in_rotation(self) -> None:
        if self.arrival_log is not None:
            self.arrival_log.instances = max(1, self.fleet.count(ACTIVE))

    def routed(self, instance: str, routed: Routed) -> None:
        request = routed.request
        self.open.add(request.id)
        if self.controller is None:
            return
        forecast = routed.forecast
        cluster = self.cluster
        if forecast is None and not cluster.policy.wants_forecasts:
            # The policy made none (round robin...): forecast the chosen instance here, as the router does.
            tracker = cluster.trackers[cluster.index_of[instance]]
            candidate = RoutingRequest(request.prompt_tokens, request.expected_output_tokens, None)
            horizon = cluster.forecasts.horizon_s
            if horizon is None:
                forecast = tracker.predict(candidate, routed.at)
            else:
                forecast = predict_within(tracker, candidate, routed.at, horizon)
                self.own_capped += is_capped(forecast)
        if forecast is not None:
            self.controller.observe_forecast(routed.at, forecast.e2e_s)
        self.step(routed.at)

    def finished(self, instance: str, request_id: str, at: float) -> None:
        if request_id not in self.open:
            return
        self.open.discard(request_id)
        if self.controller is not None:
            self.controller.observe_finished(at, at - self.arrivals[int(request_id)])
        inst = self.fleet.by_id(instance)
        tracker = self.cluster.trackers[inst.index]
        if inst.state == DRAINING and tracker.in_flight == 0:
            self.fleet.release(inst, at)
        if self.controller is not None:
            self.step(at)

    def step(self, now: float) -> None:
        fleet, controller = self.fleet, self.controller
        assert controller is not None
        fleet.activate_ready(now)
        self._count_in_rotation()
        counts = PoolCounts(
            fleet.count(ACTIVE) + fleet.count(STARTING), fleet.count(STARTING), fleet.count(DRAINING)
        )
        decision = controller.decide(now, counts)
        if decision is None:
            return
        if decision.action == SCALE_UP:
            if fleet.start_one(now) is None:
                self.failed_actions += 1
                controller.failed(decision, now)
            return
        active = [inst for inst in fleet.instances if inst.state == ACTIVE]
        if len(active) <= 1:
            self.failed_actions += 1
            controller.failed(decision, now)
            return
        trackers = self.cluster.trackers
        # The least loaded, newest first among equals: its drain ends soonest.
        inst = min(active, key=lambda s: (trackers[s.index].in_flight, -s.index))
        fleet.drain(inst, now)
        self._count_in_rotation()
        if trackers[inst.index].in_flight == 0:
            fleet.release(inst, now)


def simulate_provisioned(
    config: SimConfig, requests: SimRequests, plan: SimProvisionPlan
) -> ProvisionedOutcome:
    """Run `requests` through a simulated cluster whose instances come and go under `plan`."""
    cluster = Cluster(replace(config, instances=plan.max_instances))
    driver = _Driver(cluster, plan, requests)
    outcome = cluster.run(requests, None)
    end = outcome.duration_s
    fleet = driver.fleet
    fleet.activate_ready(end)
    decisions = [] if driver.controller is None else [d.to_dict() for d in driver.controller.decisions]
    return ProvisionedOutcome(
        outcome,
        plan,
        decisions,
        list(fleet.timeline),
        fleet.instance_seconds(end),
        {
            "failed_actions": driver.failed_actions,
            "capped_forecasts": driver.capped_forecasts,
            "forecasts": outcome.stats.get("forecasts", 0),
            "forecast_cpu_s": outcome.stats.get("forecast_cpu_s", 0.0),
            "cpu_s": outcome.stats.get("cpu_s", 0.0),
        },
    )
