"""Arrival processes: rate, burstiness, reproducibility, trace scaling."""

from __future__ import annotations

import numpy as np
import pytest

from block.workload.arrivals import arrival_times, scale_trace


@pytest.mark.parametrize(
    ("process", "cv"), [("poisson", 1.0), ("gamma", 0.5), ("gamma", 2.0), ("gamma", 4.0)]
)
def test_mean_rate_and_cv(process: str, cv: float) -> None:
    n, qps = 200_000, 25.0
    t = arrival_times(n, qps, process, burstiness=cv, seed=3)
    gaps = np.diff(np.concatenate([[0.0], t]))
    assert n / t[-1] == pytest.approx(qps, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.05)
    assert np.all(gaps >= 0)


def test_poisson_ignores_burstiness() -> None:
    assert np.array_equal(arrival_times(100, 5, "poisson", 3.0, seed=1), arrival_times(100, 5, seed=1))


def test_constant() -> None:
    assert np.allclose(arrival_times(4, 2.0, "constant"), [0.5, 1.0, 1.5, 2.0])


def test_seeded_reproducibility() -> None:
    a = arrival_times(1000, 10, "gamma", 2.0, seed=5)
    assert np.array_equal(a, arrival_times(1000, 10, "gamma", 2.0, seed=5))
    assert not np.array_equal(a, arrival_times(1000, 10, "gamma", 2.0, seed=6))


def test_infinite_rate_sends_at_once() -> None:
    assert np.array_equal(arrival_times(3, float("inf")), np.zeros(3))


@pytest.mark.parametrize(
    ("args", "match"), [((5, 0), "qps"), ((5, 1, "nope"), "process"), ((5, 1, "gamma", 0), "burstiness")]
)
def test_bad_arguments(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        arrival_times(*args)


def test_scale_trace_to_rate() -> None:
    ts = [10.0, 11.0, 11.5, 14.0]
    assert np.allclose(scale_trace(ts), [0.0, 1.0, 1.5, 4.0])
    scaled = scale_trace(ts, qps=3.0)  # 3 gaps over 4 s is 0.75/s; target 3/s squeezes time 4x
    assert np.allclose(scaled, [0.0, 0.25, 0.375, 1.0])
    assert scale_trace([], 2.0).size == 0
