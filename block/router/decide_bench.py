"""`block router decide-bench`: the time of one block decision over N busy instances, in process.

A fleet of N trackers, each holding a busy snapshot as the paper's A30 engines show under load (48
running with mixed lengths, the newest prefilling, a queue of about `waiting` requests, the KV cache
95% in use: block.predictor.bench.busy_snapshot), is asked for decisions one after the other, as the
router's event loop asks them (one core). Each decision routes its request to the chosen instance, so
that tracker's state changes and is prepared again at the next decision, as between two polls.

Timed (wall, and this thread's CPU): the decision as the router makes it (`Forecasts.candidates`: the
instances walked in the order of their cheapest floor (block/fleet/ready_order.py), each reached one
bounded again and forecast in best-first order until the best beats every remaining floor; then the
policy's choice). Also run, on a second, identical fleet (so that its forecasts prepare nothing for the
timed ones), only its CPU timed (`exhaustive_cpu_p50_ms`: the cost before pruning): the same decision
forecasting every instance; `same_choice` is the share of decisions where both chose the same instance.
Both fleets route each request to the timed decision's choice, so they stay identical. The first
decision, which first prepares every instance's state (`Forecasts.prepare`: its checkpoint, a replay of
its queue), is reported apart (`prepare_ms`): in the router that work is spread over the decisions
between two snapshots. After each decision the routed instance's state is prepared again, off the
decision's path as the router does it once the request is on its way (`Forecasts.settle`: its
forecaster, its checkpoint extended, its place in the order); that is timed apart (`settle_cpu_p50_ms`,
this thread's CPU), and `total_cpu_p50_ms` is the CPU of a decision and its settling together (what
the event loop spends per request).
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

from block.fleet.forecasts import Forecasts
from block.fleet.tracker import InstanceTracker
from block.policies import Candidates, make_policy
from block.predictor.bench import busy_snapshot
from block.profiles.profile import load_profile
from block.request import RoutingRequest

PROFILE = "llama-2-7b-a30"
SNAPSHOT_AGE_S = 0.01  # how long before each decision the snapshots were taken (a poll interval)


def fleet(n: int, running: int, waiting: int, seed: int) -> list[InstanceTracker]:
    """N trackers of busy instances; each queue holds between half and 1.5 times `waiting` requests."""
    profile = load_profile(PROFILE)
    rng = random.Random(seed)
    trackers = []
    for i in range(n):
        queue = rng.randint(waiting // 2, waiting + waiting // 2)
        snap = busy_snapshot(profile, running, queue, seed=seed * 100_003 + i)
        t = InstanceTracker(f"i{i}", profile, snap.config, added_delay="none")
        t.observe(snap, 0.0)
        trackers.append(t)
    return trackers


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def run(
    instances: int, running: int = 48, waiting: int = 32, decisions: int = 50, seed: int = 0
) -> dict[str, Any]:
    trackers = fleet(instances, running, waiting, seed)
    reference = fleet(instances, running, waiting, seed)  # the same fleet, forecast exhaustively
    policy = make_policy("block", seed=seed)
    pruned, every = Forecasts(policy), Forecasts(policy, prune=False)
    rng = random.Random(seed + 1)
    times, cpu, before, same, forecasts, settle, total = [], [], [], 0, [], [], []
    prepare_ms = 0.0
    now = SNAPSHOT_AGE_S
    for k in range(decisions + 1):
        request = RoutingRequest(
            max(4, min(int(rng.expovariate(1 / 512)), 2000)),
            max(2, min(int(rng.expovariate(1 / 256)), 1500)),
            None,
            f"d{k}",
        )
        made = pruned.made
        t0, c0 = time.perf_counter(), time.thread_time()
        if k == 0:
            pruned.prepare(trackers)
        choice = policy.choose(request, pruned.candidates(request, trackers, now), now)
        wall, used = time.perf_counter() - t0, time.thread_time() - c0
        c1 = time.thread_time()
        everyone = Candidates(reference, every.in_process(request, reference, now))
        exhaustive = policy.choose(request, everyone, now)
        exhaustive_cpu = time.thread_time() - c1
        if k == 0:  # every instance's state prepared here
            prepare_ms = wall * 1e3
        else:
            times.append(wall)
            cpu.append(used)
            before.append(exhaustive_cpu)
            forecasts.append(pruned.made - made)
            same += trackers.index(choice.instance) == reference.index(exhaustive.instance)  # type: ignore[arg-type]
        chosen = choice.instance
        assert isinstance(chosen, InstanceTracker)
        chosen.on_routed(request, now)
        reference[trackers.index(chosen)].on_routed(request, now)
        c2 = time.thread_time()
        pruned.settle(trackers, now)  # the router: once the request is on its way
        settled = time.thread_time() - c2
        if k > 0:
            settle.append(settled)
            total.append(used + settled)
        now += 1e-4
    return {
        "p50_ms": round(statistics.median(times) * 1e3, 4),
        "p99_ms": round(_percentile(times, 0.99) * 1e3, 4),
        "same_choice": same / decisions,
        "cpu_p50_ms": round(statistics.median(cpu) * 1e3, 4),  # this thread's CPU: the machine may be shared
        "cpu_p99_ms": round(_percentile(cpu, 0.99) * 1e3, 4),
        "forecasts_per_decision": round(statistics.fmean(forecasts), 2),
        # after each decision, off its path: the routed instance's state prepared again
        "settle_cpu_p50_ms": round(statistics.median(settle) * 1e3, 4),
        "settle_cpu_p99_ms": round(_percentile(settle, 0.99) * 1e3, 4),
        "total_cpu_p50_ms": round(statistics.median(total) * 1e3, 4),  # a decision and its settling
        "total_cpu_p99_ms": round(_percentile(total, 0.99) * 1e3, 4),
        # the same decisions forecasting every instance (as before pruning), this thread's CPU
        "exhaustive_cpu_p50_ms": round(statistics.median(before) * 1e3, 4),
        "prepare_ms": round(prepare_ms, 2),
        "instances": instances,
        "running": running,
        "waiting": waiting,
        "decisions": decisions,
        "profile": PROFILE,
    }
