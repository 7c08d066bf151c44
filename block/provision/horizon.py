"""Forecasts that stop at a horizon: "does the new request finish within H seconds, and if so when?"

A provisioning decision only needs to know whether a forecast is over the SLO, yet a full forecast on a
deep queue replays every request ahead of the candidate, so its cost grows without bound with the queue
(an under-provisioned fleet, a stalled scale-up). Stopped at a horizon H >= SLO, a forecast costs at
most H seconds of the instance's virtual time:

- the candidate finishes within H: the forecast is exactly the predictor's;
- it does not: the forecast is `capped` with e2e_s = H, a lower bound. Every capped instance then
  scores the same, and the block policy's tie-break (fewest requests in flight) decides among them,
  which is also what the live router does when forecasts miss their deadline.
"""

from __future__ import annotations

from typing import Any

from block.request import Forecast, RoutingRequest


def predict_within(tracker: Any, request: RoutingRequest, now: float, horizon_s: float) -> Forecast | None:
    """`tracker.predict(request, now, added_delay="none")` stopped at `horizon_s` after the request's
    arrival. A tracker that cannot forecast (one without a profile) answers None."""
    return tracker.predict(request, now, added_delay="none", horizon_s=horizon_s)


def is_capped(forecast: Forecast | None) -> bool:
    return bool(getattr(forecast, "capped", False))
