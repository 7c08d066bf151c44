"""`block predictor bench`: time forecasts on a realistic, busy snapshot."""

from __future__ import annotations

import random
import resource
import statistics
import sys
import time
from dataclasses import replace
from typing import Any

from block.predictor.forecast import Arrivals, Forecaster, forecast
from block.predictor.stepwise import run_stepwise
from block.profiles.profile import Profile
from block.replica import ReplicaConfig, RequestState, Snapshot, blocks_for
from block.request import RoutingRequest

ANTICIPATED_RATE = 3.0  # req/s per instance for the anticipated-arrivals timing


def busy_snapshot(
    profile: Profile,
    running: int = 64,
    waiting: int = 16,
    prompt: int = 512,
    output: int = 256,
    kv_usage: float = 0.95,
    seed: int = 0,
) -> Snapshot:
    """Mixed prompt and output lengths (exponential around the means), requests part-way through
    their output, the newest two still prefilling, a few preempted ones waiting, and a KV cache
    sized so that `kv_usage` of it is in use now."""
    rng = random.Random(seed)
    base = ReplicaConfig.from_dict(profile.engine_defaults) if profile.engine_defaults else ReplicaConfig()
    max_len = base.max_model_len

    def lengths() -> tuple[int, int]:
        p = max(4, min(int(rng.expovariate(1 / prompt)), max_len // 2))
        o = max(2, min(int(rng.expovariate(1 / output)), max_len - p - 1))
        return p, o

    run_states, used_tokens = [], 0
    for i in range(running):
        p, o = lengths()
        if i >= running - 2:  # the newest are still prefilling, in chunks
            c, g = rng.randint(1, p - 1), 0
        else:
            g = rng.randint(1, o - 1)
            c = p + g - 1
        run_states.append(RequestState(f"run{i}", 0.0, p, c, g, o))
        used_tokens += c
    wait_states = []
    for i in range(waiting):
        p, o = lengths()
        g = rng.randint(1, o - 1) if i < 2 else 0  # the first two were preempted after some output
        wait_states.append(RequestState(f"wait{i}", 0.0, p, 0, g, o))
    used_blocks = sum(blocks_for(s.computed_tokens, base.block_size) for s in run_states)
    config = replace(
        base,
        max_num_seqs=max(base.max_num_seqs, running),
        num_gpu_blocks=max(int(used_blocks / kv_usage) + 1, blocks_for(max_len, base.block_size)),
    )
    free = config.num_gpu_blocks - used_blocks
    return Snapshot(config, 100.0, run_states, wait_states, free_blocks=free, profile=profile.name)


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def run_bench(
    profile: Profile,
    running: int = 64,
    waiting: int = 16,
    prompt: int = 512,
    output: int = 256,
    iterations: int = 2000,
    stepwise_iterations: int = 5,
    added_delay: str = "horizon",
    seed: int = 0,
) -> dict[str, Any]:
    snaps = [busy_snapshot(profile, running, waiting, prompt, output, seed=seed + i) for i in range(20)]
    request = RoutingRequest(prompt, output)
    for s in snaps:  # warm up
        forecast(s, request, profile, added_delay=added_delay)  # type: ignore[arg-type]
    times, cpu, events, steps = [], [], [], []
    for i in range(iterations):
        s = snaps[i % len(snaps)]
        c0, t0 = time.thread_time(), time.perf_counter()
        f = forecast(s, request, profile, added_delay=added_delay)  # type: ignore[arg-type]
        times.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
        events.append(f.events)
        steps.append(f.steps)
    # the same questions asked of one prepared Forecaster (what the tracker does between snapshots)
    prepared = [Forecaster(s, profile) for s in snaps]
    for fc in prepared:
        fc.without_candidate()
    cached = []
    for i in range(iterations):
        fc = prepared[i % len(prepared)]
        t0 = time.perf_counter()
        fc.forecast(request, 0.01)
        cached.append(time.perf_counter() - t0)
    # with anticipated arrivals (--anticipate-arrivals): 3 req/s per instance of the same sizes, about
    # what each of 12 A30 instances receives near capacity
    anticipated = []
    arrivals = Arrivals(ANTICIPATED_RATE, prompt, output)
    for i in range(iterations):
        fc = prepared[i % len(prepared)]
        t0 = time.perf_counter()
        fc.forecast(request, 0.01, arrivals=arrivals)
        anticipated.append(time.perf_counter() - t0)
    stepwise = []
    for i in range(stepwise_iterations):
        t0 = time.perf_counter()
        run_stepwise(snaps[i % len(snaps)], request, profile)
        stepwise.append(time.perf_counter() - t0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (
        1024 if sys.platform != "darwin" else 1024 * 1024
    )
    return {
        "p50_ms": round(statistics.median(times) * 1e3, 4),
        "p99_ms": round(_percentile(times, 0.99) * 1e3, 4),
        "rss_mb": round(rss, 1),
        # CPU time of this thread: wall-clock tails on a shared machine are mostly other processes
        "cpu_p50_ms": round(statistics.median(cpu) * 1e3, 4),
        "cpu_p99_ms": round(_percentile(cpu, 0.99) * 1e3, 4),
        "stepwise_p50_ms": round(statistics.median(stepwise) * 1e3, 3),
        "speedup": round(statistics.median(stepwise) / statistics.median(times), 1),
        "cached_p50_ms": round(statistics.median(cached) * 1e3, 4),
        "anticipated_p50_ms": round(statistics.median(anticipated) * 1e3, 4),
        "anticipated_p99_ms": round(_percentile(anticipated, 0.99) * 1e3, 4),
        "mean_engine_steps": round(statistics.fmean(steps), 1),
        "mean_events": round(statistics.fmean(events), 1),
        "added_delay": added_delay,
        "profile": profile.name,
        "iterations": iterations,
    }
