"""Block's own policies: send each request where it is forecast to finish soonest."""

from __future__ import annotations

from collections.abc import Sequence

from block.policies.base import (
    Candidates,
    Choice,
    Forecast,
    InstanceView,
    Policy,
    RoutingRequest,
    least_requests,
    register,
)
from block.policies.heuristics import RoundRobin


@register
class BlockPolicy(Policy):
    """Minimum forecast end-to-end latency of the new request.

    `sample` > 0 forecasts only that many random instances (power of n choices). `harm_weight`
    adds that multiple of the delay the request would cause to the requests already there.
    If any forecast is missing (a predictor was late or down) the decision falls back to
    least-requests over the same candidates: a cheap rule, never an error.
    """

    name = "block"
    wants_forecasts = True

    def __init__(self, seed: int | None = None, sample: int = 0, harm_weight: float = 0.0) -> None:
        super().__init__(seed)
        self.sample = sample
        self.harm_weight = harm_weight

    def forecast_targets(self, instances: Sequence[InstanceView]) -> Sequence[InstanceView]:
        if 0 < self.sample < len(instances):
            return self.rng.sample(list(instances), self.sample)
        return instances

    def choose(self, request: RoutingRequest, candidates: Candidates, now: float) -> Choice:
        views, forecasts = candidates.views, candidates.forecasts
        if forecasts is None or any(f is None for f in forecasts):
            return Choice(least_requests(views), fallback=True)

        def score(i: int) -> tuple[float, int]:
            f = forecasts[i]
            assert f is not None
            return self.forecast_score(f, views[i])

        return Choice(views[min(range(len(views)), key=score)])

    def forecast_score(self, forecast: Forecast, view: InstanceView) -> tuple[float, int]:
        return (finish_s(forecast, view) + self.harm_weight * forecast.added_delay_s, view.in_flight)

    def score_floor(self, e2e_floor_s: float, view: InstanceView) -> tuple[float, int] | None:
        # the harm term has no floor (it is not known to be >= 0): only the plain e2e score prunes.
        # finish_s >= e2e_s / scale when the decode scale is > 1 (only the decode part is divided)
        if self.harm_weight:
            return None
        return (e2e_floor_s / max(1.0, decode_scale(view)), view.in_flight)


def decode_scale(view: InstanceView) -> float:
    """The calibrated decode factor the instance's forecasts use (block/fleet/calibration.py); 1 when
    the instance is not calibrated."""
    return getattr(view, "decode_scale", 1.0)


def finish_s(forecast: Forecast, view: InstanceView) -> float:
    """What block minimises: the forecast E2E, the request's own decode counted at the profile's speed.

    Forecasts are right about each instance's speed once it is calibrated; what a choice should not do
    with that is send every long request to the fastest decoders. Measured in the simulator (12 x A30,
    ShareGPT, static error 0.4, 39 req/s): choosing the soonest calibrated finish, the fast engines got
    the long requests (mean E2E there 14-16 s against 7 s on the slowest), their sequence slots filled,
    newcomers queued behind them and P99 TTFT went from 1.1 s uncalibrated to 5.4 s (5.9 s with the true
    speeds given outright): the finish of one long request bought with the fleet's TTFT tail, which the
    SLO is on. So the queue and the prefill are forecast at the instance's true speed, the request's own
    decode at the speed every instance is believed to have (the scale is 1 without calibration).
    """
    scale = decode_scale(view)
    if scale == 1.0:
        return forecast.e2e_s
    return forecast.ttft_s + (forecast.e2e_s - forecast.ttft_s) / scale


@register
class BlockPowerOfTwo(BlockPolicy):
    name = "block-po2"

    def __init__(self, seed: int | None = None, harm_weight: float = 0.0) -> None:
        super().__init__(seed, sample=2, harm_weight=harm_weight)


@register
class ShadowRoundRobin(RoundRobin):
    """Round robin, with every instance forecast for every request all the same: the predictor judged
    where it does not route. Later arrivals then go where they would have gone whatever the forecasts
    said, as in `block predictor accuracy`; also a way to watch forecasts before letting them route."""

    name = "shadow-round-robin"
    wants_forecasts = True
    reads_state = True
    needs_snapshots = True
