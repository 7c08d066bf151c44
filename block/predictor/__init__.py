"""Forecasts from instance snapshots: the library, the per-instance tracker and the sidecar."""

from block.predictor.forecast import Forecaster, Prediction, forecast
from block.predictor.lengths import LengthRule
from block.predictor.tracker import InstanceTracker, added_delay_for
from block.replica.fast_replica import DeadlineExceeded

__all__ = [
    "DeadlineExceeded",
    "Forecaster",
    "InstanceTracker",
    "LengthRule",
    "Prediction",
    "added_delay_for",
    "forecast",
]
