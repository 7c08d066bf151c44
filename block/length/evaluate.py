"""Scoring an estimator on held-out samples."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from block.length.estimator import LengthEstimator
from block.length.metrics import coverage, length_metrics
from block.workload import Sample


def evaluate(estimator: LengthEstimator, held_out: Sequence[Sample], baseline: float) -> dict[str, float]:
    """The paper's measures plus the coverage of the 10-90% band, on samples never trained on."""
    prompts = [s.prompt for s in held_out]
    tokens = [s.prompt_tokens for s in held_out]
    q = estimator.predict_quantiles_many(prompts, (0.1, 0.5, 0.9), tokens)
    actual = np.array([s.output_tokens for s in held_out], dtype=np.float64)
    out = length_metrics(q[:, 1], actual, baseline)
    out["coverage80"] = coverage(q[:, 0], q[:, 2], actual)
    out["n"] = len(held_out)
    return out
