"""Forecasts see what the live router would: the state as of the latest 20 ms poll, plus pending routes."""

from __future__ import annotations

from typing import Any

import pytest

from block.replica import Snapshot
from block.sim import routers as routers_module  # where the simulator makes its trackers
from block.sim import simulate
from tests.sim.helpers import signature, small_config, small_workload

REAL_MAKE_TRACKERS = routers_module.make_trackers


class Recorder:
    """Wraps a tracker: remembers the latest snapshot it observed and what it was asked."""

    def __init__(self, inner: Any) -> None:
        self.__dict__["inner"] = inner
        self.__dict__["seen"] = None
        self.__dict__["observations"] = []

    def observe(self, snapshot: Snapshot, at: float, step_end: float | None = None) -> None:
        self.__dict__["seen"] = (at, snapshot.to_dict(), step_end)
        self.observations.append((at, snapshot.now, step_end))
        self.inner.observe(snapshot, at, step_end)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.inner, name, value)


def run_recorded(monkeypatch: pytest.MonkeyPatch, refresh: str, policy: str) -> tuple[list, list, Any]:
    made: list[Recorder] = []
    real = REAL_MAKE_TRACKERS

    def make(*args: Any) -> list[Recorder]:
        made.extend(Recorder(t) for t in real(*args))
        return made

    monkeypatch.setattr(routers_module, "make_trackers", make)
    views: list[list] = []

    def hook(cluster: Any, i: int, now: float, targets: Any, choice: Any) -> None:
        views.append([(t.seen, targets.forecast_for(t), t.in_flight, t.waiting, t.free_blocks) for t in made])

    out = simulate(
        small_config(policy=policy, refresh=refresh, instances=4), small_workload(200, qps=35), hook
    )
    return views, [t.observations for t in made], out


@pytest.mark.parametrize("policy", ["llumnix", "block"])
def test_lazy_snapshots_equal_polling_every_tick(monkeypatch: pytest.MonkeyPatch, policy: str) -> None:
    lazy_views, lazy_obs, lazy = run_recorded(monkeypatch, "lazy", policy)
    poll_views, _, poll = run_recorded(monkeypatch, "poll", policy)
    assert lazy_views == poll_views  # at every decision every tracker holds the same snapshot and forecast
    assert signature(lazy) == signature(poll)
    assert lazy.stats["snapshots"] < poll.stats["snapshots"] / 2  # decisions every ~2 ticks here
    for obs in lazy_obs:  # observed only at tick times, each snapshot no newer than its tick
        for at, snap_now, step_end in obs:
            assert at == pytest.approx(round(at / 0.02) * 0.02, abs=1e-9)
            assert snap_now == at  # the engine's clock at the poll, as a live /state reports it
            assert step_end is None or step_end >= at


def test_forecast_sees_pending_requests_not_the_replica(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two requests 1 ms apart, both within one tick: the second decision's snapshot predates the first
    routed request, which the tracker must carry as pending (in_flight/waiting include it)."""
    import numpy as np

    from block.sim import SimRequests

    reqs = SimRequests(np.array([100, 100]), np.array([10, 10]), np.array([0.101, 0.102]))
    seen: list[tuple[int, int]] = []
    made: list[Any] = []
    real = REAL_MAKE_TRACKERS

    def make(*args: Any) -> list[Any]:
        made.extend(real(*args))
        return made

    monkeypatch.setattr(routers_module, "make_trackers", make)

    def hook(cluster: Any, i: int, now: float, targets: Any, choice: Any) -> None:
        seen.append((sum(t.in_flight for t in made), sum(t.waiting for t in made)))

    simulate(small_config(policy="llumnix", instances=1), reqs, hook)
    assert seen == [(0, 0), (1, 1)]
