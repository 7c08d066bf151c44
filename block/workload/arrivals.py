"""Arrival processes: when each request is sent, as offsets in seconds from the start of a run.

Gamma inter-arrival times with mean 1/qps and coefficient of variation `burstiness` (shape 1/CV^2):
CV 1 is a Poisson process, CV > 1 burstier, CV < 1 smoother. "constant" sends every 1/qps seconds.
Trace timestamps can be replayed at a different average rate by scaling time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PROCESSES = ("poisson", "gamma", "constant")


def arrival_times(
    n: int, qps: float, process: str = "poisson", burstiness: float = 1.0, seed: int = 0
) -> np.ndarray:
    """Send offsets (s) of n requests at an average of `qps` requests per second.

    qps = inf sends everything at once. The first request waits one inter-arrival gap, as vLLM's
    benchmark does, so the measured rate over n requests is n / last offset.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not qps > 0:
        raise ValueError(f"qps must be > 0, got {qps}")
    if process not in PROCESSES:
        raise ValueError(f"unknown arrival process {process!r}; choose one of {', '.join(PROCESSES)}")
    if np.isinf(qps):
        return np.zeros(n)
    if process == "constant":
        return np.arange(1, n + 1) / qps
    cv = 1.0 if process == "poisson" else burstiness
    if not cv > 0:
        raise ValueError(f"burstiness must be > 0, got {burstiness}")
    shape = 1.0 / cv**2
    gaps = np.random.default_rng(seed).gamma(shape, scale=1.0 / (qps * shape), size=n)
    return np.cumsum(gaps)


def scale_trace(timestamps: Sequence[float] | np.ndarray, qps: float | None = None) -> np.ndarray:
    """Trace timestamps from 0, stretched or squeezed so their average rate is `qps` (None: as recorded)."""
    ts = np.sort(np.asarray(timestamps, dtype=np.float64))
    if ts.size == 0:
        return ts
    ts = ts - ts[0]
    if qps is None or ts.size < 2 or ts[-1] == 0:
        return ts
    if not qps > 0:
        raise ValueError(f"qps must be > 0, got {qps}")
    # Rate over the span is (n - 1) / span; keep the shape, change the clock.
    return ts * ((ts.size - 1) / ts[-1]) / qps
