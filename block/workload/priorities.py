"""Priority classes of a workload: a share of the requests is high priority (1), the rest low (0).

Drawn per request in workload order from its own seeded stream, so `block bench` (x-priority headers)
and `block simulate` give the same request the same class, whatever the arrival process.
"""

from __future__ import annotations

import numpy as np

HIGH, LOW = 1, 0


def priorities(n: int, share: float, seed: int = 0) -> np.ndarray:
    """int64 classes of n requests, about `share` of them HIGH; all LOW when share is 0."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"priority share must be in [0, 1], got {share}")
    if share == 0.0:
        return np.zeros(n, dtype=np.int64)
    draws = np.random.default_rng([seed, 0x9121]).random(n)
    return np.where(draws < share, HIGH, LOW).astype(np.int64)
