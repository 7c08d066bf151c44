"""Block's own policies: send each request where it is forecast to finish soonest."""

from __future__ import annotations

import math
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

# The forecast's measured end-to-end error under load: forecasts closer than this are equal as far as the
# forecast can tell. Mean |forecast - actual| / actual of the chosen instance's forecast, sim, 12 x A30,
# 2,000 requests, near capacity: 15% on sharegpt-chat at 13 sessions/s, 19% on shared-prefix:32:1024 at
# 18 req/s (the forecast does not see the requests that arrive after it and join the batch; 2.2% at a
# light load). Taking the lower, on shared-prefix:32:1024 at 19 req/s: P99 TTFT 0.60 s (4.76 s at 5%,
# prefix-load 1.22 s).
FORECAST_E2E_ERROR = 0.15
SCORE_GRID = 1e9  # per second: scores are compared to the nanosecond (see on_grid)


@register
class BlockPolicy(Policy):
    """Minimum forecast end-to-end latency of the new request.

    `sample` > 0 forecasts only that many random instances (power of n choices). `harm_weight`
    adds that multiple of the delay the request would cause to the requests already there.
    If any forecast is missing (a predictor was late or down) the decision falls back to
    least-requests over the same candidates: a cheap rule, never an error.

    Cache affinity: forecasts closer than the forecast's own error (`affinity_tolerance`, relative)
    do not tell instances apart, so among those the request goes where the longest prefix of its
    prompt is cached. That costs this request nothing the forecast can see, and it keeps a prompt's
    blocks on few instances: the later requests that share them find them there, and the other
    instances' caches keep their own prompts instead of a copy. Among instances caching equally much,
    it joins the copy the most requests in flight there share (`prefix_sharers`): that copy stays in
    the KV cache while they run anyway, and the others drain and become evictable. On shared system
    prompts the KV cache is what runs out near capacity (preemptions make the P99 TTFT), and every
    copy of a 1,024-token prompt held by requests in flight is 64 blocks fewer for their own tokens.
    Requests with no prefix identity, or none cached anywhere, choose by the forecast alone, as before.
    """

    name = "block"
    wants_forecasts = True

    def __init__(
        self,
        seed: int | None = None,
        sample: int = 0,
        harm_weight: float = 0.0,
        affinity_tolerance: float = FORECAST_E2E_ERROR,
    ) -> None:
        super().__init__(seed)
        self.sample = sample
        self.harm_weight = harm_weight
        self.affinity_tolerance = affinity_tolerance

    def forecast_targets(self, instances: Sequence[InstanceView]) -> Sequence[InstanceView]:
        if 0 < self.sample < len(instances):
            return self.rng.sample(list(instances), self.sample)
        return instances

    def choose(self, request: RoutingRequest, candidates: Candidates, now: float) -> Choice:
        views, forecasts = candidates.views, candidates.forecasts
        if forecasts is None or any(f is None for f in forecasts):
            return Choice(least_requests(views), fallback=True)

        # each score once: a decision over a big fleet hands on hundreds of candidates
        scores = [self.forecast_score(f, v) for f, v in zip(forecasts, views, strict=True)]  # type: ignore[arg-type]
        best = min(range(len(views)), key=scores.__getitem__)
        if not request.prefix_hashes or self.affinity_tolerance <= 0:
            return Choice(views[best])
        # every instance forecast within the error of the best one is as good as the best
        bound = scores[best][0] * (1 + self.affinity_tolerance)
        near = [i for i in range(len(views)) if scores[i][0] <= bound]
        cached = {i: views[i].cached_prefix_blocks(request) for i in near}
        sharers = {i: prefix_sharers(views[i], request) for i in near}
        return Choice(views[min(near, key=lambda i: (-cached[i], -sharers[i], scores[i]))])

    def forecast_score(self, forecast: Forecast, view: InstanceView) -> tuple[float, int]:
        return (on_grid(finish_s(forecast, view) + self.harm_weight * forecast.added_delay_s), view.in_flight)

    def score_floor(
        self, e2e_floor_s: float, view: InstanceView, request: RoutingRequest | None = None
    ) -> tuple[float, int] | None:
        # the harm term has no floor (it is not known to be >= 0): only the plain e2e score prunes.
        # finish_s >= e2e_s / scale when the decode scale is > 1 (only the decode part is divided), and
        # a target whose floor is within the affinity tolerance of the best may still be among the near
        # ones, unless it has none of the request cached (then it wins only by having the best score)
        if self.harm_weight:
            return None
        tolerance = self.affinity_tolerance
        if request is not None and (not request.prefix_hashes or not view.cached_prefix_blocks(request)):
            tolerance = 0.0
        return (on_grid(e2e_floor_s / max(1.0, decode_scale(view)) / (1 + tolerance)), view.in_flight)


def on_grid(seconds: float) -> float:
    """`seconds` to the nearest whole nanosecond: scores that differ by less are equal, and the tie goes
    to fewer requests in flight, then to the first instance. A forecast read off a recorded run and the
    same forecast replayed sum the same step times in another order and differ in their last bits
    (block/predictor/timeline.py); without the grid a tie between alike instances would go to whichever
    was replayed. Rounded, not cut: a profile's round coefficients put forecasts on whole nanoseconds,
    where cutting sends a value a bit under one to the nanosecond below (a property test found a
    read and a replay of one forecast split that way). Monotone, so a floor on the grid stays under the
    score on the grid."""
    return math.floor(seconds * SCORE_GRID + 0.5) / SCORE_GRID if math.isfinite(seconds) else seconds


def prefix_sharers(view: InstanceView, request: RoutingRequest) -> int:
    """Requests in flight on the instance that hold the first block of this prompt (0 when the view
    does not know)."""
    sharers = getattr(view, "prefix_sharers", None)
    return 0 if sharers is None else sharers(request)


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
