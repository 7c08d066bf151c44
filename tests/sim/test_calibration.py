"""`block simulate --calibration`: the same calibration code as the router, fed the replicas' token times,
makes forecasts right on engines that do not run at their profile's speed."""

from __future__ import annotations

import pytest

from block.fleet.listeners import RequestListener, Routed
from block.profiles.model_error import ModelError
from block.sim.config import SimConfig
from block.sim.simulator import Cluster
from block.sim.workload import WorkloadSpec, requests_for


class E2EError(RequestListener):
    """|forecast - actual| / actual E2E of every request routed with a forecast."""

    def __init__(self) -> None:
        self.forecasts: dict[str, tuple[float, float]] = {}
        self.errors: list[float] = []

    def routed(self, instance: str, routed: Routed) -> None:
        if routed.forecast is not None:
            self.forecasts[routed.request.id] = (routed.at, routed.forecast.e2e_s)

    def finished(self, instance: str, request_id: str, at: float) -> None:
        sent, forecast = self.forecasts.pop(request_id)
        self.errors.append(abs(at - sent - forecast) / (at - sent))

    @property
    def mean(self) -> float:
        return sum(self.errors) / len(self.errors)


def run(calibration: bool) -> tuple[Cluster, float]:
    config = SimConfig(
        instances=4,
        profile="llama-2-7b-a30",
        policy="block",
        seed=0,
        record_itl=False,
        model_error="static:0.4",
        calibration=calibration,
    )
    cluster = Cluster(config)
    errors = E2EError()
    cluster.listeners.add(errors)
    cluster.run(requests_for(WorkloadSpec("sharegpt", 400, "poisson", 1.0, 0), 6.0), None)
    assert len(errors.errors) == 400
    return cluster, errors.mean


def test_calibration_finds_each_replicas_speed_and_cuts_the_forecast_error() -> None:
    plain, plain_error = run(False)
    calibrated, calibrated_error = run(True)
    assert all(t.calibration is None for t in plain.trackers)
    truth = ModelError("static", 0.4)
    for r, tracker in enumerate(calibrated.trackers):
        assert tracker.calibration is not None
        assert tracker.calibration.decode.factor == pytest.approx(truth.factor(r)(0), rel=0.03)
    assert calibrated_error < 0.6 * plain_error
