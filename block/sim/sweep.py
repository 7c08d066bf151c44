"""`block simulate`: every policy at every rate, with a progress bar, a comparison and capacities."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from block.errors import fail
from block.fleet.engine_spec import EngineSpec
from block.sim.batch import RunResult, SimRun, run_many
from block.sim.capacity import write_capacity_files
from block.sim.config import SimConfig
from block.sim.executor import ExecutorSpec
from block.sim.table import capacities, capacity_table, comparison_table
from block.sim.workload import WorkloadSpec, requests_for


@dataclass(frozen=True)
class SimulateArgs:
    instances: int
    profile: str
    policies: list[str]
    dataset: str
    rates: list[float]
    num_requests: int
    process: str = "poisson"
    burstiness: float = 1.0
    seed: int = 0
    noise: float = 0.03
    stall_probability: float = 0.001
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    num_gpu_blocks: int | None = None
    max_model_len: int = 4096
    workers: int = 2
    executor: ExecutorSpec = ExecutorSpec()  # where the runs execute: local processes or Ray tasks
    keep_itl: bool = False
    slo_ttft_p99: float = 3.0
    out: Path = Path("results/sim")
    lengths: str = "known"  # what the router plans with: known | estimated | quantile:Q
    split: str = "all"  # all | held-out prompts (see block.sim.workload)
    anticipate_arrivals: bool = False  # forecasts add the arrivals expected at the routing rate
    model_error: str = ""  # KIND:E: replicas run at a true speed the forecasts do not know
    fleet: tuple[EngineSpec, ...] = ()  # one engine per instance (a mixed fleet); () : `profile` for all
    think_time_s: float = 5.0  # session workloads: mean wait (s) between an answer and the next turn
    calibration: bool = False  # the trackers correct their profile online from the token times
    prefix_caching: bool = True  # vLLM V1's automatic prefix caching in the replicas
    prefix_ceiling: bool = False  # instead, every prompt block computed anywhere is cached everywhere
    routers: int = 1  # independent routers in front of the fleet (block/sim/routers.py)
    admission: str = "off"  # off | queue | reject (block/admission), in front of every policy
    max_held: int = 1000
    admission_ttft_s: float | None = 3.0  # every request's TTFT target (goodput counts against it)
    admission_e2e_s: float | None = None
    priority_share: float = 0.0  # share of high-priority requests


def build_runs(a: SimulateArgs) -> list[SimRun]:
    workload = WorkloadSpec(
        a.dataset,
        a.num_requests,
        a.process,
        a.burstiness,
        a.seed,
        max_model_len=a.max_model_len,
        lengths=a.lengths,
        split=a.split,
        think_time_s=a.think_time_s,
        priority_share=a.priority_share,
    )
    slos = {"ttft_p99": a.slo_ttft_p99}
    if a.admission != "off" or a.priority_share:  # goodput: requests within their targets
        slos.update(
            {k: v for k, v in (("ttft", a.admission_ttft_s), ("e2e", a.admission_e2e_s)) if v is not None}
        )
    runs = []
    for policy in a.policies:
        config = SimConfig(
            instances=a.instances,
            profile=a.profile,
            policy=policy,
            max_num_seqs=a.max_num_seqs,
            max_num_batched_tokens=a.max_num_batched_tokens,
            num_gpu_blocks=a.num_gpu_blocks,
            max_model_len=a.max_model_len,
            noise=a.noise,
            stall_probability=a.stall_probability,
            seed=a.seed,
            anticipate_arrivals=a.anticipate_arrivals,
            model_error=a.model_error,
            calibration=a.calibration,
            fleet=a.fleet,
            prefix_caching=a.prefix_caching,
            prefix_ceiling=a.prefix_ceiling,
            routers=a.routers,
            admission=a.admission,
            max_held=a.max_held,
            admission_ttft_s=a.admission_ttft_s,
            admission_e2e_s=a.admission_e2e_s,
        )
        label = policy if a.admission == "off" else f"{policy}+{a.admission}"
        for qps in a.rates:
            runs.append(SimRun(config, workload, qps, label=label, slos=dict(slos), keep_itl=a.keep_itl))
    return runs


def run_with_progress(
    runs: list[SimRun], out: Path, workers: int, console: Console, executor: ExecutorSpec = ExecutorSpec()
) -> list[RunResult]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("simulating", total=len(runs))

        def done(r: RunResult) -> None:
            progress.update(task, advance=1, description=f"{r.run.name} ({r.stats['wall_s']:.1f} s)")

        return run_many(runs, out, workers=workers, on_done=done, executor=executor)


def simulate_main(a: SimulateArgs) -> list[RunResult]:
    console = Console()
    runs = build_runs(a)
    try:  # load (and cache, for the workers) the workload first: a bad spec or file fails in one line
        requests_for(runs[0].workload, a.rates[0])
    except (ValueError, OSError) as e:
        fail(str(e))
    # Keep policy order, then rate order, as the user listed them.
    results = run_with_progress(runs, a.out, a.workers, console, a.executor)
    console.print(comparison_table(results))
    caps = capacities(results, a.slo_ttft_p99)
    reference = "block" if "block" in caps else None
    console.print(capacity_table(caps, a.slo_ttft_p99, reference))
    write_capacity_files(caps, a.out, a.slo_ttft_p99)
    console.print(f"results: {a.out}/ ({len(results)} files and capacity_*.json); plot: block plot {a.out}")
    return results
