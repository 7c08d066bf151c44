"""Fit a small piecewise-linear function (a few knots) to measured step times.

Greedy knot insertion: start from the two ends, fit the knot values by least squares in relative
error, and add the measured token count that lowers the RMS relative error most, until the knot budget
is spent. The data is first made monotone (isotonic regression): the true cost cannot fall when tokens
are added, and measurement jitter should not bend the profile. Errors are reported against the raw
measurements.

The measured times are a staircase: GEMM tiles are 128 tokens wide, so e.g. Llama-2-7B on an A100
jumps from 12.4 ms at 128 tokens to 17.7 ms at 136. A smooth profile with a modest number of knots
averages over these steps on purpose (they move with kernel versions and GPUs, the A30 profile is
derived from the A100 one); chasing them knot by knot would only trade the max error for many knots.
Minimising the RMS error, not the max, keeps the knots on the trend instead of on single steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KnotFit:
    tokens: tuple[int, ...]
    seconds: tuple[float, ...]
    max_rel_error: float  # against the raw measurements
    rms_rel_error: float
    worst_tokens: int  # where the max error occurs


def isotonic(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted non-decreasing least-squares fit (pool adjacent violators)."""
    values: list[float] = []
    weights: list[float] = []
    counts: list[int] = []
    for yi, wi in zip(y, w, strict=True):
        values.append(float(yi))
        weights.append(float(wi))
        counts.append(1)
        while len(values) > 1 and values[-2] > values[-1]:
            wsum = weights[-2] + weights[-1]
            merged = (values[-2] * weights[-2] + values[-1] * weights[-1]) / wsum
            count = counts[-2] + counts[-1]
            del values[-1], weights[-1], counts[-1]
            values[-1], weights[-1], counts[-1] = merged, wsum, count
    return np.repeat(values, counts)


def _hat_basis(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Column j is the piecewise-linear function that is 1 at knot j and 0 at the others."""
    eye = np.eye(len(knots))
    return np.stack([np.interp(x, knots, eye[j]) for j in range(len(knots))], axis=1)


def _fit_values(x: np.ndarray, y: np.ndarray, knots: np.ndarray) -> np.ndarray:
    a = _hat_basis(x, knots) / y[:, None]  # relative error: divide each row by its measurement
    values, *_ = np.linalg.lstsq(a, np.ones_like(y), rcond=None)
    return np.maximum.accumulate(values)  # keep the profile monotone


def relative_errors(x: np.ndarray, y: np.ndarray, knots: np.ndarray, values: np.ndarray) -> np.ndarray:
    return np.abs(np.interp(x, knots, values) - y) / y


def _rms(x: np.ndarray, y: np.ndarray, knots: np.ndarray, values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(relative_errors(x, y, knots, values) ** 2)))


def fit_knots(
    tokens: tuple[int, ...] | list[int],
    seconds: tuple[float, ...] | list[float],
    max_knots: int = 16,
    max_tokens: int = 4096,
) -> KnotFit:
    x = np.asarray(tokens, dtype=float)
    y_raw = np.asarray(seconds, dtype=float)
    keep = x <= max_tokens
    x, y_raw = x[keep], y_raw[keep]
    if len(x) < 2 or max_knots < 2:
        raise ValueError("need at least two measured token counts and two knots")
    y = isotonic(y_raw, 1.0 / y_raw**2)  # weights match the relative-error objective
    knots = np.array([x[0], x[-1]])
    while len(knots) < min(max_knots, len(x)):
        trials = [np.sort(np.append(knots, c)) for c in x if c not in knots]
        knots = min(trials, key=lambda k: _rms(x, y, k, _fit_values(x, y, k)))
    values = _fit_values(x, y, knots)
    raw_err = relative_errors(x, y_raw, knots, values)
    return KnotFit(
        tokens=tuple(int(k) for k in knots),
        seconds=tuple(float(v) for v in values),
        max_rel_error=float(raw_err.max()),
        rms_rel_error=float(np.sqrt(np.mean(raw_err**2))),
        worst_tokens=int(x[int(np.argmax(raw_err))]),
    )
