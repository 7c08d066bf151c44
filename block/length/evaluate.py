"""Scoring an estimator on held-out samples."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from block.length.calibrate import coverage_by_level
from block.length.estimator import LengthEstimator
from block.length.metrics import coverage, length_metrics
from block.workload import Sample


def evaluate(estimator: LengthEstimator, held_out: Sequence[Sample], baseline: float) -> dict:
    """The paper's measures on samples never trained on, plus how honest the quantiles are: coverage80,
    the share inside the 10-90% band, and `coverage`, per fitted level q the share at or below it (a
    calibrated level q gives about q)."""
    prompts = [s.prompt for s in held_out]
    tokens = [s.prompt_tokens for s in held_out]
    levels = sorted({0.1, 0.5, 0.9, *estimator.quantiles})
    q = estimator.predict_quantiles_many(prompts, levels, tokens)
    col = {lv: q[:, i] for i, lv in enumerate(levels)}
    actual = np.array([s.output_tokens for s in held_out], dtype=np.float64)
    out: dict = length_metrics(col[0.5], actual, baseline)
    out["coverage80"] = coverage(col[0.1], col[0.9], actual)
    out["coverage"] = coverage_by_level(
        q[:, [levels.index(lv) for lv in estimator.quantiles]], actual, estimator.quantiles
    )
    out["n"] = len(held_out)
    return out
