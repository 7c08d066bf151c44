"""Forecasts from instance snapshots: the library (the fleet's trackers and the sidecar use it)."""

from block.predictor.forecast import Forecaster, Prediction, forecast
from block.predictor.lengths import LengthRule
from block.replica.fast_replica import DeadlineExceeded

__all__ = [
    "DeadlineExceeded",
    "Forecaster",
    "LengthRule",
    "Prediction",
    "forecast",
]
