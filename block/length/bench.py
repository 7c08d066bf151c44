"""What one prediction costs: per-prompt latency of `predict`, p50 / p99, and batch throughput.

Batched cost is measured two ways: `predict_many` over all prompts at once (the simulator's way), and over
consecutive batches of BATCH prompts in arrival order (the router's way: requests that arrive together are
predicted together, whatever their lengths), reported per prompt.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from block.length.estimator import LengthEstimator

BATCH = 16


def bench(
    estimator: LengthEstimator, prompts: Sequence[str], warmup: int = 20, batch: int = BATCH
) -> dict[str, float]:
    """Times `predict(prompt)` one prompt at a time, `predict_many` on batches of `batch` prompts (as the
    router's batcher calls it), then `predict_many` on all prompts."""
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
    per_prompt, per_prompt_cpu = [], []
    for start in range(0, len(prompts) - batch + 1, batch):
        c0 = time.process_time()  # the process: BLAS may use more threads than the calling one
        t0 = time.perf_counter()
        estimator.predict_many(list(prompts[start : start + batch]))
        per_prompt.append((time.perf_counter() - t0) / batch)
        per_prompt_cpu.append((time.process_time() - c0) / batch)
    batched = np.array(per_prompt or [np.nan]) * 1e3
    batched_cpu = np.array(per_prompt_cpu or [np.nan]) * 1e3
    t0 = time.perf_counter()
    estimator.predict_many(list(prompts))
    whole = time.perf_counter() - t0
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
        "batch_size": batch,
        "batch16_p50_ms": float(np.percentile(batched, 50)),  # per prompt, in batches of `batch`
        "batch16_p99_ms": float(np.percentile(batched, 99)),
        "batch16_cpu_p50_ms": float(np.percentile(batched_cpu, 50)),
        "batch_ms_per_prompt": float(whole * 1e3 / len(prompts)),
    }
