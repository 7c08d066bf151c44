"""Response-length estimation: predict how many tokens a prompt's answer will have.

from block.length import load_default_estimator, LengthEstimator
est = load_default_estimator()            # shipped model (or trained once on first use)
est.predict("Write a poem about the sea")  # -> int tokens (median)
est.predict_quantiles(prompt, (0.5, 0.9))  # -> {0.5: ..., 0.9: ...}, non-decreasing
LengthEstimator.load(path).predict(prompt)
"""

from block.length.default import load_default_estimator
from block.length.estimator import QUANTILES, LengthEstimator

__all__ = ["QUANTILES", "LengthEstimator", "load_default_estimator"]
