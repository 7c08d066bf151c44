"""Conformal calibration of the quantile models: make each level cover what it claims on unseen prompts.

Boosted quantile trees fit their own training data too tightly: in-sample residuals are smaller than on new
prompts, so the fitted 10-90% band covers well under 80% of held-out outputs. Conformalised quantile
regression (Romano et al., 2019) fixes that per level q: fit the trees on part of the training split,
predict a calibration slice the trees never saw, and shift level q (in log space) by the q-quantile of the
slice's residuals y - q_hat. Afterwards a share q of the slice lies at or below the shifted level, and, the
slice being drawn like the held-out split, about the same share of new prompts does.

The calibration slice is part of the training split; the held-out evaluation split is never touched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

CALIBRATION_FRACTION = 0.2


def in_calibration_slice(prompt: str, seed: int, fraction: float = CALIBRATION_FRACTION) -> bool:
    """Decided by a hash of the prompt (with its own salt, independent of the train / held-out split),
    so duplicate prompts fall on the same side and the slice is the same whatever the order."""
    key = f"calibration\x00{seed}\x00{prompt}".encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64 < fraction


def calibration_mask(prompts: Sequence[str], seed: int, fraction: float = CALIBRATION_FRACTION) -> np.ndarray:
    return np.fromiter((in_calibration_slice(p, seed, fraction) for p in prompts), bool, len(prompts))


def conformal_offsets(predicted: np.ndarray, actual: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Per level q, the shift c_q that makes q_hat + c_q cover a share q of the calibration samples:
    the q-quantile of the residuals actual - q_hat (both (n, levels) / (n,), in the same units)."""
    predicted = np.asarray(predicted, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if predicted.ndim != 2 or predicted.shape != (len(actual), len(levels)) or not len(actual):
        raise ValueError("need one prediction per calibration sample and level")
    residuals = actual[:, None] - predicted
    return np.array([np.quantile(residuals[:, j], q) for j, q in enumerate(levels)])


def coverage_by_level(predicted: np.ndarray, actual: np.ndarray, levels: Sequence[float]) -> dict[str, float]:
    """{"q": share of actual <= predicted at level q}: a calibrated level q gives about q."""
    y = np.asarray(actual, dtype=np.float64)[:, None]
    below = (y <= np.asarray(predicted, dtype=np.float64)).mean(axis=0)
    return {f"{q:g}": float(b) for q, b in zip(levels, below, strict=True)}
