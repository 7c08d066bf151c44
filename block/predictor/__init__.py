"""Forecasts from instance snapshots: the library, the per-instance tracker and the sidecar."""

from block.predictor.forecast import Forecaster, Prediction, forecast
from block.predictor.lengths import LengthRule

__all__ = ["Forecaster", "LengthRule", "Prediction", "forecast"]
