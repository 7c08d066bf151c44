"""`block simulate bench`: how fast the simulator runs, on the two cases the project sets goals for.

(a) 10,000 ShareGPT requests on 12 instances with the block policy (forecasts at every decision);
    goal <= 5 s. Anchor: Vidur's event loop took 14.6 s for 10,000 requests on one replica.
(b) 1,000,000 requests on 1,000 instances with round robin; goal <= 5 minutes. The 1M requests are
    ShareGPT's filtered conversations drawn in whole reshuffles (each one about 61 times), Poisson at
    2 requests/s per instance, below round robin's capacity, so queues stay bounded.
(c) (b) with the block policy: a forecast-backed decision over 1,000 instances per request (pruned to
    those that may win, block/fleet/forecasts.py); goal <= 10 minutes. Not run by default (long).
`requests` caps every case's requests, arrival rate unchanged, for a first look at a long case.
Each case also reports where the time went (forecasts, snapshots, steps) and, with --profile-out, a cProfile.
"""

from __future__ import annotations

import cProfile
import os
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from block.sim.config import SimConfig
from block.sim.simulator import simulate
from block.sim.workload import WorkloadSpec, requests_for


@dataclass(frozen=True)
class BenchCase:
    name: str
    description: str
    instances: int
    policy: str
    num_requests: int
    qps: float
    goal_s: float


def bench_cases(quick: bool) -> dict[str, BenchCase]:
    b = (
        BenchCase(
            "b",
            "100,000 requests, 100 instances, round robin (quick: 1/10 of b)",
            100,
            "round-robin",
            100_000,
            200.0,
            30.0,
        )
        if quick
        else BenchCase(
            "b",
            "1,000,000 requests, 1,000 instances, round robin",
            1000,
            "round-robin",
            1_000_000,
            2000.0,
            300.0,
        )
    )
    a = BenchCase("a", "10,000 ShareGPT requests, 12 instances, block", 12, "block", 10_000, 28.0, 5.0)
    c = (
        BenchCase("c", "100,000 requests, 100 instances, block (quick: 1/10 of c)", 100, "block", 100_000,
                  200.0, 60.0)
        if quick
        else BenchCase("c", "1,000,000 requests, 1,000 instances, block", 1000, "block", 1_000_000, 2000.0,
                       600.0)
    )  # fmt: skip
    return {"a": a, "b": b, "c": c}


def run_case(case: BenchCase, profile_out: Path | None = None, requests: int | None = None) -> dict[str, Any]:
    capped = requests is not None and requests < case.num_requests
    if capped:
        case = replace(case, num_requests=requests, description=f"{case.description}, first {requests:,}")
    spec = WorkloadSpec("sharegpt", case.num_requests, seed=0)
    t0 = time.perf_counter()
    requests = requests_for(spec, case.qps)
    load_s = time.perf_counter() - t0
    # Per-request inter-token gaps cost one float per token: kept for (a), dropped for (b) as big runs do.
    config = SimConfig(instances=case.instances, policy=case.policy, record_itl=case.num_requests <= 100_000)
    profiler = cProfile.Profile() if profile_out else None
    t0, c0 = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    outcome = simulate(config, requests)
    if profiler:
        profiler.disable()
        profiler.dump_stats(f"{profile_out}.{case.name}.prof")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    st = outcome.stats
    forecasts = st["forecasts"]
    return {
        "case": case.name,
        "description": case.description,
        "instances": case.instances,
        "policy": case.policy,
        "requests": case.num_requests,
        "qps": case.qps,
        "simulated_s": round(outcome.duration_s, 3),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),  # this process's CPU time: less than wall when other work shares the cores
        "requests_per_s": round(case.num_requests / wall, 1),
        "goal_s": case.goal_s,
        "meets_goal": None if capped else wall <= case.goal_s,  # the goal is for the whole case
        "workload_load_s": round(load_s, 3),
        "steps": st["steps"],
        "steps_per_s": round(st["steps"] / wall),
        "forecasts": forecasts,
        "forecast_cpu_s": round(st["forecast_cpu_s"], 3),
        "forecast_cpu_us_each": round(st["forecast_cpu_s"] / forecasts * 1e6, 1) if forecasts else None,
        "pruned": st.get("pruned", 0),  # targets not forecast: their floor could not win
        "walked": st.get("walked", 0),  # targets reached in a walk of the ready order (1,000 instances)
        "snapshots": st["snapshots"],
        "schedule": st["schedule"],
        "profiled": profiler is not None,  # cProfile slows everything ~2-3x: do not compare wall times
    }


def run_bench(
    quick: bool = False,
    cases: list[str] | None = None,
    profile_out: Path | None = None,
    requests: int | None = None,
) -> dict[str, Any]:
    table = bench_cases(quick)
    unknown = [c for c in cases or [] if c not in table]
    if unknown:
        raise ValueError(f"unknown bench case {', '.join(unknown)} (known: {', '.join(table)})")
    results = [run_case(table[c], profile_out, requests) for c in cases or ["a", "b"]]
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "quick": quick,
        "cases": results,
    }


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"Simulator speed ({report['machine']['cpus']} CPUs, Python {report['machine']['python']})"
    )
    for col in (
        "case",
        "requests",
        "instances",
        "policy",
        "wall s",
        "cpu s",
        "req/s",
        "goal s",
        "forecast cpu us",
        "steps/s",
    ):
        table.add_column(col, justify="left" if col in ("case", "policy") else "right")
    for c in report["cases"]:
        table.add_row(
            c["case"],
            f"{c['requests']:,}",
            str(c["instances"]),
            c["policy"],
            f"{c['wall_s']:.2f}",
            f"{c['cpu_s']:.2f}",
            f"{c['requests_per_s']:,.0f}",
            f"{c['goal_s']:g}" + {True: " ok", False: " MISSED", None: " (capped)"}[c["meets_goal"]],
            "-" if c["forecast_cpu_us_each"] is None else f"{c['forecast_cpu_us_each']:.0f}",
            f"{c['steps_per_s']:,}",
        )
    Console().print(table)
