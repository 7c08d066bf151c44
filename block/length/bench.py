"""What one prediction costs: per-prompt latency of `predict`, p50 / p99, and batch throughput."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from block.length.estimator import LengthEstimator


def bench(estimator: LengthEstimator, prompts: Sequence[str], warmup: int = 20) -> dict[str, float]:
    """Times `predict(prompt)` one prompt at a time (as the router calls it), then `predict_many`."""
    if not prompts:
        raise ValueError("no prompts to time")
    for p in prompts[:warmup]:
        estimator.predict(p)
    times = np.empty(len(prompts))
    cpu = np.empty(len(prompts))
    for i, p in enumerate(prompts):
        c0 = time.thread_time()
        t0 = time.perf_counter()
        estimator.predict(p)
        times[i] = time.perf_counter() - t0
        cpu[i] = time.thread_time() - c0
    t0 = time.perf_counter()
    estimator.predict_many(list(prompts))
    batch = time.perf_counter() - t0
    ms = times * 1e3
    return {
        "n": len(prompts),
        "mean_ms": float(ms.mean()),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        # CPU time of the calling thread: the cost itself, without time spent preempted on a busy host.
        "cpu_p50_ms": float(np.percentile(cpu * 1e3, 50)),
        "cpu_p99_ms": float(np.percentile(cpu * 1e3, 99)),
        "batch_ms_per_prompt": float(batch * 1e3 / len(prompts)),
    }
