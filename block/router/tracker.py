"""Per-instance view for the policies.

`block.predictor.tracker.InstanceTracker` folds requests routed since the last snapshot into the queue
and forecasts from it; it needs the instance's step-time profile. Block engines name theirs in /state;
for stock vLLM it comes from the router's `profile` setting. Without a profile (or without the
predictor package) the router uses `BasicTracker`: the same attributes and methods, counts from the
latest snapshot plus the router's own in-flight record, and no forecasts - every policy still works
and `block` falls back (counted).
"""

from __future__ import annotations

import bisect
from collections import deque
from typing import Any

from block.policies import Forecast, RoutingRequest
from block.replica import ReplicaConfig, Snapshot, blocks_for

_WINDOW_S = 60.0  # longest window any policy asks about (min-qpm)


class BasicTracker:
    def __init__(self, id: str, config: ReplicaConfig | None = None) -> None:
        self.id = id
        self.config = config or ReplicaConfig()
        self.in_flight = 0
        self.running = 0
        self.waiting = 0
        self.free_blocks = self.config.num_gpu_blocks
        self.num_gpu_blocks = self.config.num_gpu_blocks
        self.block_size = self.config.block_size
        self.waiting_prompt_tokens = 0
        self.forecast: Forecast | None = None
        self.last_forecast: Forecast | None = None
        self._snapshot_at: float | None = None
        self._routed_times: deque[float] = deque()
        self._pending: dict[str, tuple[int, float]] = {}  # routed, not yet seen by a snapshot

    def observe(self, snapshot: Snapshot, at: float) -> None:
        self._snapshot_at = at
        cfg = snapshot.config
        self.num_gpu_blocks, self.block_size = cfg.num_gpu_blocks, cfg.block_size
        seen = {r.id for r in snapshot.running} | {r.id for r in snapshot.waiting}
        for rid in [rid for rid in self._pending if rid in seen]:
            del self._pending[rid]
        pending_tokens = sum(p for p, _ in self._pending.values())
        self.running = len(snapshot.running)
        self.waiting = len(snapshot.waiting) + len(self._pending)
        self.waiting_prompt_tokens = (
            sum(max(0, r.prompt_tokens - r.computed_tokens) for r in snapshot.waiting) + pending_tokens
        )
        free = snapshot.free_blocks if snapshot.free_blocks is not None else cfg.num_gpu_blocks
        self.free_blocks = free

    def on_routed(self, request_id: str, prompt_tokens: int, expected_output_tokens: int, at: float) -> None:
        self.in_flight += 1
        self._pending[request_id] = (prompt_tokens, at)
        self.waiting += 1
        self.waiting_prompt_tokens += prompt_tokens
        self._routed_times.append(at)
        while self._routed_times and self._routed_times[0] < at - _WINDOW_S:
            self._routed_times.popleft()

    def on_finished(self, request_id: str, at: float) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        if self._pending.pop(request_id, None) is not None:
            self.waiting = max(0, self.waiting - 1)

    def routed_in_last(self, seconds: float, now: float) -> int:
        times = self._routed_times
        return len(times) - bisect.bisect_left(times, now - seconds)

    def snapshot_age(self, now: float) -> float | None:
        return None if self._snapshot_at is None else now - self._snapshot_at

    def predict(
        self,
        request: RoutingRequest,
        now: float,
        *,
        added_delay: str | None = None,
        deadline: float | None = None,
        horizon_s: float | None = None,
    ) -> Forecast | None:
        return None  # no forecasting model without block.predictor

    def blocks_needed(self, tokens: int) -> int:
        return blocks_for(tokens, self.block_size)


def make_tracker(
    id: str,
    profile: Any,
    config: ReplicaConfig | None,
    default_output_tokens: int,
    length_of: Any = None,
    fleet: Any = None,
) -> Any:
    """The real InstanceTracker when importable and a profile is known, else BasicTracker. With a
    `fleet` (make_fleet_log), forecasts anticipate the fleet's arrival rate per instance."""
    if profile is not None:
        try:
            from block.predictor.tracker import InstanceTracker
        except ImportError:
            pass
        else:
            return InstanceTracker(
                id,
                profile,
                config=config,
                default_output_tokens=default_output_tokens,
                length_of=length_of,
                anticipate_arrivals=fleet is not None,
                fleet=fleet,
            )
    return BasicTracker(id, config)


def make_fleet_log() -> Any:
    """The routing record all trackers share for anticipated arrivals (None without the predictor)."""
    try:
        from block.predictor.arrival_log import FleetLog
    except ImportError:
        return None
    return FleetLog()
