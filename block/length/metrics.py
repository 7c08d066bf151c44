"""How good a length estimate is: the measures of the Block paper plus rank correlation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def length_metrics(predicted: Sequence[float], actual: Sequence[float], baseline: float) -> dict[str, float]:
    """mae, the MAE of always answering `baseline` (the training median), Spearman rank correlation,
    acc50 / acc100 (share within 50 / 100 tokens) and within25 (share within 25% of the actual length)."""
    from scipy.stats import spearmanr

    p = np.asarray(predicted, dtype=np.float64)
    y = np.asarray(actual, dtype=np.float64)
    if p.shape != y.shape or p.size == 0:
        raise ValueError("predicted and actual must be non-empty and of equal length")
    err = np.abs(p - y)
    rho = spearmanr(p, y)[0] if p.size > 1 and np.ptp(p) > 0 and np.ptp(y) > 0 else 0.0
    return {
        "mae": float(err.mean()),
        "baseline_mae": float(np.abs(baseline - y).mean()),
        "spearman": float(rho),
        "acc50": float((err <= 50).mean()),
        "acc100": float((err <= 100).mean()),
        "within25": float((err <= 0.25 * y).mean()),
    }


def coverage(lower: Sequence[float], upper: Sequence[float], actual: Sequence[float]) -> float:
    """Share of actual lengths inside [lower, upper]: how honest a quantile band is."""
    y = np.asarray(actual, dtype=np.float64)
    return float(((np.asarray(lower) <= y) & (y <= np.asarray(upper))).mean())
