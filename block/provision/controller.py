"""Auto-provisioning decisions: when to add or retire an instance. Pure and clock-agnostic.

The controller never reads a clock and never acts: its caller (the live router, the simulator, a test)
feeds it observations stamped with the caller's own time and asks `decide(now, counts)`; it answers with
a structured decision or None. So the router (monotonic seconds) and the simulator (virtual seconds) run
the very same rules.

Rules, in order:
1. bounds: fewer serving instances than `min_instances` -> scale up; more than `max_instances` -> scale
   down. Bounds ignore the cooldown (they are the operator's hard limits).
2. scale up, only after the cooldown since the last action and below `max_instances`:
   - preemptive (the paper's): a routing forecast said a new request would finish after the SLO, i.e.
     even the instance the policy chose cannot meet it (after `scale_up_fraction` x SLO: below 1, the
     fleet adds capacity while it still has headroom, since a new instance takes a while to serve);
   - reactive: a finished request took longer than the SLO.
   The triggering observation must be newer than the last action (the action already answered older ones)
   and within `signal_window_s` (a miss long ago is no reason to act now).
3. scale down (beyond the paper, which never scales down), after the cooldown and above `min_instances`:
   every forecast and every finished request stayed under `scale_down_fraction` x SLO for
   `scale_down_hold_s`, and no instance is starting (capacity just asked for is not surplus).
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

PREEMPTIVE = "preemptive"
REACTIVE = "reactive"
MODES = (PREEMPTIVE, REACTIVE)

SCALE_UP = "scale_up"
SCALE_DOWN = "scale_down"

# Reasons (the `reason` label of block_router_provision_decisions_total).
BELOW_MIN = "below_min"
ABOVE_MAX = "above_max"
FORECAST_OVER_SLO = "forecast_over_slo"
FINISHED_OVER_SLO = "finished_over_slo"
UNDER_SLO = "forecasts_under_slo"

_NEVER = float("-inf")


@dataclass(frozen=True, slots=True)
class ProvisionSettings:
    mode: str
    slo_e2e_s: float
    min_instances: int = 1
    max_instances: int = 1
    cooldown_s: float = 30.0
    scale_down: bool = True
    scale_down_hold_s: float = 120.0
    scale_down_fraction: float = 0.5  # "well under the SLO": forecasts below this share of it
    scale_up_fraction: float = 1.0  # preemptive: forecasts above this share of the SLO add capacity
    signal_window_s: float = 10.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"provision mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if not self.slo_e2e_s > 0:
            raise ValueError("the E2E SLO must be > 0 seconds")
        if self.min_instances < 0 or self.max_instances < max(1, self.min_instances):
            raise ValueError("need 0 <= min_instances <= max_instances and max_instances >= 1")
        if self.cooldown_s < 0 or self.scale_down_hold_s < 0 or self.signal_window_s <= 0:
            raise ValueError("cooldown and hold must be >= 0 s, the signal window > 0 s")
        if not 0 < self.scale_down_fraction < 1:
            raise ValueError("scale_down_fraction must be in (0, 1)")
        if not self.scale_down_fraction < self.scale_up_fraction <= 1:
            raise ValueError("scale_up_fraction must be in (scale_down_fraction, 1]")


@dataclass(frozen=True, slots=True)
class PoolCounts:
    """What the caller holds now. `serving` = in rotation or on the way there (starting, briefly
    unhealthy); draining instances are not serving."""

    serving: int
    starting: int = 0
    draining: int = 0


@dataclass(frozen=True, slots=True)
class ProvisionDecision:
    time: float  # the caller's clock
    action: str  # scale_up | scale_down
    reason: str
    instances_before: int  # serving instances before the action
    instances_after: int
    value_s: float | None = None  # the latency that triggered it (forecast or measured), if any

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ProvisionController:
    def __init__(self, settings: ProvisionSettings, start: float = 0.0) -> None:
        self.settings = settings
        self.last_action_at = _NEVER
        self._miss_at = _NEVER  # latest triggering observation for the mode's scale-up rule
        self._miss_value: float | None = None
        self._calm_since = start  # since when every observation stayed under the scale-down line
        self._retry_at = _NEVER  # after a failed action: no new one before this
        self.decisions: deque[ProvisionDecision] = deque(maxlen=10_000)  # bounded: routers run for months

    # -- observations ------------------------------------------------------------------------------

    def observe_forecast(self, now: float, e2e_s: float | None) -> None:
        """The forecast E2E latency of a request just routed, on the instance it was sent to."""
        if e2e_s is None:
            return
        s = self.settings
        if s.mode == PREEMPTIVE and e2e_s > s.scale_up_fraction * s.slo_e2e_s:
            self._miss(now, e2e_s)
        self._level(now, e2e_s)

    def observe_finished(self, now: float, e2e_s: float) -> None:
        """The measured E2E latency of a request that just finished."""
        if self.settings.mode == REACTIVE and e2e_s > self.settings.slo_e2e_s:
            self._miss(now, e2e_s)
        self._level(now, e2e_s)

    def _miss(self, now: float, value: float) -> None:
        self._miss_at = now
        self._miss_value = value

    def _level(self, now: float, value: float) -> None:
        if value >= self.settings.scale_down_fraction * self.settings.slo_e2e_s:
            self._calm_since = now

    # -- the decision ------------------------------------------------------------------------------

    def decide(self, now: float, counts: PoolCounts) -> ProvisionDecision | None:
        s = self.settings
        n = counts.serving
        if now < self._retry_at:
            return None
        if n < s.min_instances:
            return self._act(now, SCALE_UP, BELOW_MIN, n, None)
        if n > s.max_instances:
            return self._act(now, SCALE_DOWN, ABOVE_MAX, n, None)
        if now - self.last_action_at < s.cooldown_s:
            return None
        fresh = self._miss_at > self.last_action_at and now - self._miss_at <= s.signal_window_s
        if fresh and n < s.max_instances:
            reason = FORECAST_OVER_SLO if s.mode == PREEMPTIVE else FINISHED_OVER_SLO
            return self._act(now, SCALE_UP, reason, n, self._miss_value)
        calm_for = now - max(self._calm_since, self.last_action_at)
        if s.scale_down and n > s.min_instances and counts.starting == 0 and calm_for >= s.scale_down_hold_s:
            return self._act(now, SCALE_DOWN, UNDER_SLO, n, None)
        return None

    def failed(self, decision: ProvisionDecision | None, now: float, retry_s: float = 5.0) -> None:
        """The caller could not carry `decision` out (no standby left, a hook failed, an instance never
        became healthy: None): back off, so a broken provider is retried every `retry_s` rather than
        at every tick."""
        self._retry_at = now + retry_s

    def _act(self, now: float, action: str, reason: str, n: int, value: float | None) -> ProvisionDecision:
        self.last_action_at = now
        after = n + 1 if action == SCALE_UP else n - 1
        decision = ProvisionDecision(now, action, reason, n, after, value)
        self.decisions.append(decision)
        return decision
