"""Forecasts from instance snapshots: the library, the per-instance tracker and the sidecar."""

from block.predictor.forecast import Forecaster, Prediction, forecast
from block.predictor.lengths import LengthRule
from block.predictor.tracker import InstanceTracker

__all__ = ["Forecaster", "InstanceTracker", "LengthRule", "Prediction", "forecast"]
