"""`block predictor bench`: time forecasts on a realistic, busy snapshot.

`--cached-prefix TOKENS` makes it cache-heavy (prefix caching on): every prompt, the candidate's too,
starts with the same TOKENS tokens (a shared system prompt, held by the running requests), and the
free blocks hold the cached blocks of earlier prompts, so the candidate's forecast starts from a hit
and its admission walks a long free queue.
"""

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
from block.prefix import chain_hashes
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
    cached_prefix: int = 0,
) -> Snapshot:
    """Mixed prompt and output lengths (exponential around the means), requests part-way through
    their output, the newest two still prefilling, a few preempted ones waiting, and a KV cache
    sized so that `kv_usage` of it is in use now. `cached_prefix`: see the module docstring."""
    rng = random.Random(seed)
    base = ReplicaConfig.from_dict(profile.engine_defaults) if profile.engine_defaults else ReplicaConfig()
    base = replace(base, enable_prefix_caching=cached_prefix > 0)
    max_len = base.max_model_len
    bs = base.block_size

    def hashes(p: int) -> tuple[int, ...]:
        if not cached_prefix:
            return ()
        uid = rng.getrandbits(40) + 1
        return chain_hashes([t if t < cached_prefix else uid * 100_000 + t for t in range(p)], bs)

    def lengths() -> tuple[int, int]:
        p = max(4, min(int(rng.expovariate(1 / prompt)), max_len // 2))
        o = max(2, min(int(rng.expovariate(1 / output)), max_len - p - 1))
        return p, o

    run_states = []
    for i in range(running):
        p, o = lengths()
        if i >= running - 2:  # the newest are still prefilling, in chunks
            c, g = rng.randint(1, p - 1), 0
        else:
            g = rng.randint(1, o - 1)
            c = p + g - 1
        run_states.append(RequestState(f"run{i}", 0.0, p, c, g, o, hashes(p)))
    wait_states = []
    for i in range(waiting):
        p, o = lengths()
        g = rng.randint(1, o - 1) if i < 2 else 0  # the first two were preempted after some output
        wait_states.append(RequestState(f"wait{i}", 0.0, p, 0, g, o, hashes(p)))
    used_blocks = sum(blocks_for(s.computed_tokens, bs) for s in run_states)
    # a block several requests hold is one block
    held = [s.prefix_hashes[: s.computed_tokens // bs] for s in run_states]
    used_blocks -= sum(len(h) for h in held) - len({x for h in held for x in h})
    config = replace(
        base,
        max_num_seqs=max(base.max_num_seqs, running),
        num_gpu_blocks=max(int(used_blocks / kv_usage) + 1, blocks_for(max_len, bs)),
    )
    free = config.num_gpu_blocks - used_blocks
    free_cached = None
    if cached_prefix:  # earlier prompts' blocks fill most of the free ones, a few anonymous between them
        free_cached, room = [], free
        while room > 2:
            for h in hashes(prompt)[::-1]:
                gap = rng.randint(0, 1)
                if gap + 1 > room:
                    break
                free_cached.append((gap, h))
                room -= gap + 1
            room = min(room, room - 1)
    return Snapshot(
        config,
        100.0,
        run_states,
        wait_states,
        free_blocks=free,
        profile=profile.name,
        free_cached=free_cached,
    )


def candidate(prompt: int, output: int, cached_prefix: int, block_size: int = 16) -> RoutingRequest:
    """The request to forecast: with `cached_prefix`, its prompt starts with the shared prefix."""
    if not cached_prefix:
        return RoutingRequest(prompt, output)
    prompt = max(prompt, cached_prefix + 1)
    tokens = [t if t < cached_prefix else 7 * 100_000 + t for t in range(prompt)]
    return RoutingRequest(
        prompt, output, prefix_hashes=chain_hashes(tokens, block_size), prefix_block_size=block_size
    )


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
    cached_prefix: int = 0,
) -> dict[str, Any]:
    snaps = [
        busy_snapshot(profile, running, waiting, prompt, output, seed=seed + i, cached_prefix=cached_prefix)
        for i in range(20)
    ]
    request = candidate(prompt, output, cached_prefix, snaps[0].config.block_size)
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
    cached, cached_cpu = [], []
    for i in range(iterations):
        fc = prepared[i % len(prepared)]
        c0, t0 = time.thread_time(), time.perf_counter()
        fc.forecast(request, 0.01)  # from the second on, from the state's checkpoint (checkpoint.py)
        cached.append(time.perf_counter() - t0)
        cached_cpu.append(time.thread_time() - c0)
    # with anticipated arrivals (--anticipate-arrivals): 3 req/s per instance of the same sizes, about
    # what each of 12 A30 instances receives near capacity
    anticipated = []
    arrivals = Arrivals(ANTICIPATED_RATE, prompt, output)
    for i in range(iterations):
        fc = prepared[i % len(prepared)]
        t0 = time.perf_counter()
        fc.forecast(request, 0.01, arrivals=arrivals)
        anticipated.append(time.perf_counter() - t0)
    stepwise, hit_tokens = [], []
    for i in range(stepwise_iterations):
        t0 = time.perf_counter()
        ref = run_stepwise(snaps[i % len(snaps)], request, profile)
        stepwise.append(time.perf_counter() - t0)
        hit_tokens.append(ref.candidate.num_cached_tokens if ref.candidate is not None else 0)
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
        "cached_cpu_p50_ms": round(statistics.median(cached_cpu) * 1e3, 4),
        "cached_cpu_p99_ms": round(_percentile(cached_cpu, 0.99) * 1e3, 4),
        "anticipated_p50_ms": round(statistics.median(anticipated) * 1e3, 4),
        "anticipated_p99_ms": round(_percentile(anticipated, 0.99) * 1e3, 4),
        "mean_engine_steps": round(statistics.fmean(steps), 1),
        "mean_events": round(statistics.fmean(events), 1),
        "added_delay": added_delay,
        "profile": profile.name,
        "iterations": iterations,
        "cached_prefix": cached_prefix,
        # the candidate's prompt tokens found cached at admission (stepwise runs, mean)
        "candidate_cached_tokens": round(statistics.fmean(hit_tokens), 1),
    }
