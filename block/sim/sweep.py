"""`block simulate`: every policy at every rate, with a progress bar, a comparison and capacities."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from block.errors import fail
from block.sim.batch import RunResult, SimRun, run_many
from block.sim.capacity import write_capacity_files
from block.sim.config import SimConfig
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
    keep_itl: bool = False
    slo_ttft_p99: float = 3.0
    out: Path = Path("results/sim")
    lengths: str = "known"  # what the router plans with: known | estimated | quantile:Q
    split: str = "all"  # all | held-out prompts (see block.sim.workload)
    anticipate_arrivals: bool = False  # forecasts add the arrivals expected at the routing rate
    model_error: str = ""  # KIND:E: replicas run at a true speed the forecasts do not know
    prefix_caching: bool = True  # vLLM V1's automatic prefix caching in the replicas
    think_time_s: float = 5.0  # session workloads: mean wait (s) between an answer and the next turn


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
            prefix_caching=a.prefix_caching,
        )
        for qps in a.rates:
            runs.append(SimRun(config, workload, qps, label=policy, slos={"ttft_p99": a.slo_ttft_p99}))
    return runs


def run_with_progress(runs: list[SimRun], out: Path, workers: int, console: Console) -> list[RunResult]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("simulating", total=len(runs))

        def done(r: RunResult) -> None:
            progress.update(task, advance=1, description=f"{r.run.name} ({r.stats['wall_s']:.1f} s)")

        return run_many(runs, out, workers=workers, on_done=done)


def simulate_main(a: SimulateArgs) -> list[RunResult]:
    console = Console()
    runs = build_runs(a)
    try:  # load (and cache, for the workers) the workload first: a bad spec or file fails in one line
        requests_for(runs[0].workload, a.rates[0])
    except (ValueError, OSError) as e:
        fail(str(e))
    # Keep policy order, then rate order, as the user listed them.
    results = run_with_progress(runs, a.out, a.workers, console)
    console.print(comparison_table(results))
    caps = capacities(results, a.slo_ttft_p99)
    reference = "block" if "block" in caps else None
    console.print(capacity_table(caps, a.slo_ttft_p99, reference))
    write_capacity_files(caps, a.out, a.slo_ttft_p99)
    console.print(f"results: {a.out}/ ({len(results)} files and capacity_*.json); plot: block plot {a.out}")
    return results
