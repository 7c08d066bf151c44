"""`block experiment model-error`: how much capacity each policy keeps when the engines do not run at the
speed of the profile the router forecasts with.

The paper's cluster (12 x Llama-2-7B on the A30 profile, chunk 512, 48 sequences, ShareGPT, Poisson) is
simulated with every model error kind (block/profiles/model_error.py) at each error level; error 0 is
measured once per policy and is the reference every kind is compared with. `block+calibration` is block
with online calibration (block/fleet/calibration.py): its trackers correct the profile per instance and
phase from the token times the replicas stream back. Capacity is the highest rate
whose P99 TTFT stays within 3 s, found per (kind, error, policy) cell by the capacity search of
block/sim/capacity.py: from the same policy's capacity at the error level below (same kind; the error-0
reference for the first level), walk in growing steps (6%, 12%, ...) to a bracket, bisect it to
`tolerance` (3%) of the rate, interpolate in log(P99 TTFT). Runs clearly over the SLO stop early.

Every run of a cell uses the same requests and seeds (common random numbers): policies and error levels
differ only in what they are. The probes of every cell of a level run together on an executor (`workers`
local processes, or Ray tasks: block/sim/executor.py), each run's results file written under `runs/`
(per-request records), so an interrupted experiment resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from block.profiles.model_error import KINDS, ModelError
from block.sim.batch import SimRun, run_many
from block.sim.capacity import PAPER_SLO_S, CapacitySearch, Probe, search_capacities
from block.sim.config import SimConfig
from block.sim.executor import LOCAL, ExecutorSpec
from block.sim.workload import WorkloadSpec, requests_for

CALIBRATED = "+calibration"  # `POLICY+calibration`: that policy, its trackers calibrated online
# block-po2 (`--policies` adds it) is left out of the defaults: it costs a third of a block run and is
# neither the reference nor a heuristic, so the conclusion does not depend on it, and the defaults fit in
# 15 minutes on two cores
DEFAULT_POLICIES = [
    "block",
    "block+calibration",
    "llumnix",
    "po2",
    "least-requests",
    "round-robin",
]
DEFAULT_ERRORS = [0.1, 0.2, 0.4]
# First probes of the reference searches: capacities measured at 4,000 requests (issue 17) or close.
FIRST_GUESS = {
    "block": 37.5,
    "block+calibration": 37.5,
    "block-po2": 35.5,
    "llumnix": 36.0,
    "least-requests": 32.0,
    "round-robin": 28.0,
}
OTHER_GUESS = 31.0


@dataclass(frozen=True)
class ModelErrorArgs:
    policies: list[str] = field(default_factory=lambda: list(DEFAULT_POLICIES))
    errors: list[float] = field(default_factory=lambda: list(DEFAULT_ERRORS))
    kinds: list[str] = field(default_factory=lambda: list(KINDS))
    num_requests: int = 4_000  # the issue's setting; 10,000 (Figure 6's) takes 2.5x as long
    instances: int = 12
    profile: str = "llama-2-7b-a30"
    max_num_seqs: int = 48
    max_num_batched_tokens: int = 512
    dataset: str = "sharegpt"
    seed: int = 0
    noise: float = 0.03
    slo_s: float = PAPER_SLO_S
    step: float = 0.06  # relative step of the walk to a bracket
    tolerance: float = 0.03  # bisect until the bracket is narrower than this share of the rate
    max_probes: int = 10  # per cell
    workers: int = 2

    def __post_init__(self) -> None:
        for kind in self.kinds:
            ModelError(kind, 0.0)  # an unknown kind fails here, with the known ones
        for e in self.errors:
            if not 0 < e < 1:
                raise ValueError(f"error levels are fractions in (0, 1) (0 is always measured), got {e:g}")
        if not self.policies:
            raise ValueError("no policies given")

    def cells(self) -> list[Cell]:
        """The references (error 0, one per policy) first, then every kind x error x policy."""
        refs = [Cell("none", 0.0, p) for p in self.policies]
        return refs + [Cell(k, e, p) for k in self.kinds for e in self.errors for p in self.policies]

    def workload(self) -> WorkloadSpec:
        return WorkloadSpec(self.dataset, self.num_requests, "poisson", 1.0, self.seed)

    def sim_config(self, cell: Cell) -> SimConfig:
        return SimConfig(
            instances=self.instances,
            profile=self.profile,
            policy=cell.policy.removesuffix(CALIBRATED),
            calibration=cell.policy.endswith(CALIBRATED),
            max_num_seqs=self.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens,
            noise=self.noise,
            seed=self.seed,
            record_itl=False,
            prefix_caching=False,  # the paper's setting (vLLM 0.7.2)
            model_error=cell.model_error,
        )


@dataclass(frozen=True)
class Cell:
    kind: str  # "none" for the error-0 reference
    error: float
    policy: str

    @property
    def model_error(self) -> str:
        return "" if self.error == 0 else f"{self.kind}:{self.error:g}"

    @property
    def name(self) -> str:
        return f"{self.policy}_{self.kind}-{self.error:g}"


@dataclass
class CellResult:
    cell: Cell
    capacity_qps: float
    bound: str  # "", ">=" or "<" as block.sim.capacity.Capacity
    probes: list[dict[str, Any]]  # rate, P99 TTFT, gave up early, wall seconds (block.sim.capacity.Probe)
    wall_s: float  # of the cell's error level, every cell of it searched together

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cell": asdict(self.cell)}


# -- the grid ----------------------------------------------------------------------------------------


def measure(
    a: ModelErrorArgs,
    searches: dict[Cell, CapacitySearch],
    runs_dir: Path,
    executor: ExecutorSpec = ExecutorSpec(),
) -> Callable[[list[tuple[Cell, float]]], list[Probe]]:
    """The `measure` of search_capacities: a round's probes as simulated runs on `executor` (`a.workers`
    local processes, or Ray tasks: block/sim/executor.py); a run whose results file already holds the same
    settings is read back."""

    def probes(wanted: list[tuple[Cell, float]]) -> list[Probe]:
        # block's forecasting policies cost ten to twenty times a heuristic's run: submitted first, the
        # cheap runs fill the workers' gaps at the end of the round
        todo = sorted(wanted, key=lambda t: not t[0].policy.startswith("block"))
        runs = [
            SimRun(
                a.sim_config(cell),
                a.workload(),
                qps,
                label=cell.policy,
                group=f"{cell.kind}-{cell.error:g}",
                give_up_ttft_s=searches[cell].give_up_ttft_s,
            )
            for cell, qps in todo
        ]
        out = {}
        for (cell, _), r in zip(
            todo, run_many(runs, runs_dir, a.workers, resume=True, executor=executor), strict=True
        ):
            gave_up = "gave_up_at_s" in r.stats
            p99 = r.run.give_up_ttft_s if gave_up else r.summary["ttft_s"]["p99"]
            out[cell] = Probe(r.run.qps, p99, gave_up, r.stats["wall_s"], r.stats["cpu_s"])
        return [out[cell] for cell, _ in wanted]

    return probes


def run_cells(
    a: ModelErrorArgs,
    runs_dir: Path,
    on_done: Callable[[CellResult], None],
    executor: ExecutorSpec = ExecutorSpec(),
) -> dict[Cell, CellResult]:
    """Every cell, one error level at a time (the references first): a cell's first guess is the same
    policy's capacity at the level below (same kind), so most searches bracket in a probe or two. Within a
    level every cell's next probe runs in one batch, keeping the workers busy."""
    requests_for(a.workload(), 1.0)  # load the samples once: forked workers inherit the cache
    results: dict[Cell, CellResult] = {}
    below: dict[tuple[str, str], float] = {}  # (kind, policy) -> capacity at the level below
    for error in [0.0, *a.errors]:
        cells = [c for c in a.cells() if c.error == error]
        searches = {}
        for c in cells:
            if error == 0:  # the guesses are for 12 instances
                guess = FIRST_GUESS.get(c.policy, OTHER_GUESS) * a.instances / 12
            else:
                guess = below[(c.kind, c.policy)]
            searches[c] = CapacitySearch(guess, a.slo_s, a.step, a.tolerance, a.max_probes)
        t0 = time.perf_counter()
        caps = search_capacities(searches, measure(a, searches, runs_dir, executor))
        wall = time.perf_counter() - t0
        for c in cells:
            cap = caps[c]
            assert cap.qps is not None
            probes = [asdict(p) for p in searches[c].probes]
            results[c] = CellResult(c, cap.qps, cap.bound, probes, wall)
            kinds = a.kinds if error == 0 else [c.kind]
            for kind in kinds:
                below[(kind, c.policy)] = cap.qps
            on_done(results[c])
    return results


# -- reporting ---------------------------------------------------------------------------------------


def summary_rows(a: ModelErrorArgs, results: dict[Cell, CellResult]) -> list[dict[str, Any]]:
    """`{error, kind, policy, capacity_qps}` per cell; the error-0 reference is listed under every kind
    (measured once: the engines run at the profile's speed whatever the kind)."""
    rows = []
    for kind in a.kinds:
        for error in [0.0, *a.errors]:
            for policy in a.policies:
                cell = Cell("none" if error == 0 else kind, error, policy)
                res = results[cell]
                rows.append(
                    {"error": error, "kind": kind, "policy": policy, "capacity_qps": res.capacity_qps}
                )
    return rows


def fleet_speeds(a: ModelErrorArgs, results: dict[Cell, CellResult]) -> list[dict[str, Any]]:
    """`{kind, error, mean_speed}`: the fleet's mean true speed over a run (its requests at the best error-0
    capacity), the share of the profile's throughput the engines had. Correlated slowdowns take it from
    every engine at once, so no routing keeps more than that share of the fleet's throughput."""
    best = max(results[Cell("none", 0.0, p)].capacity_qps for p in a.policies)
    duration_s = a.num_requests / best
    return [
        {
            "kind": kind,
            "error": e,
            "mean_speed": round(ModelError(kind, e, a.seed).mean_speed(a.instances, duration_s), 4),
        }
        for kind in a.kinds
        for e in a.errors
    ]


def cell_text(res: CellResult, ref: CellResult | None) -> str:
    text = f"{res.bound}{res.capacity_qps:.1f}"
    if ref is not None and res is not ref:
        text += f" ({(res.capacity_qps / ref.capacity_qps - 1) * 100:+.0f}%)"
    return text


def tables(
    a: ModelErrorArgs, results: dict[Cell, CellResult]
) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) per kind: capacity per policy and error level, change from error 0."""
    out = []
    for kind in a.kinds:
        head = ["policy", "error 0", *(f"{kind} {e:g}" for e in a.errors)]
        rows = []
        for policy in a.policies:
            ref = results[Cell("none", 0.0, policy)]
            cells = [results[Cell(kind, e, policy)] for e in a.errors]
            rows.append([policy, cell_text(ref, None), *(cell_text(c, ref) for c in cells)])
        speeds = {r["error"]: r["mean_speed"] for r in fleet_speeds(a, results) if r["kind"] == kind}
        rows.append(["(fleet mean speed)", "1", *(f"{speeds[e]:.3f}" for e in a.errors)])
        out.append((f"capacity (req/s) at P99 TTFT <= {a.slo_s:g} s, model error {kind}", head, rows))
    return out


def markdown(a: ModelErrorArgs, results: dict[Cell, CellResult], wall_s: float) -> str:
    lines = [
        f"# Model error: {a.instances} x {a.profile}, {a.num_requests:,} {a.dataset} requests",
        "",
        f"Capacity at P99 TTFT <= {a.slo_s:g} s per policy; the forecasts use the nominal profile "
        f"(`{CALIBRATED}`: corrected online from the token times). "
        f"Search: walk in growing steps ({a.step:.0%}, {2 * a.step:.0%}, ...) from the error-0 capacity, "
        f"bisect to {a.tolerance:.0%}, "
        f"log-interpolate; seed {a.seed}, step noise {a.noise:g}. `>=`/`<`: every/no probed rate met "
        f"the SLO. Wall time {wall_s:.0f} s.",
        "",
    ]
    for title, head, rows in tables(a, results):
        lines += [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines.append("")
    return "\n".join(lines)


def run(
    a: ModelErrorArgs, out: Path, console: Console | None = None, executor: ExecutorSpec = ExecutorSpec()
) -> dict[str, Any]:
    console = console or Console()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cells = a.cells()
    console.print(
        f"[bold]model error[/]: {len(a.policies)} policies x ({len(a.kinds)} kinds x {len(a.errors)} "
        f"errors + the error-0 reference) = {len(cells)} capacity searches on {a.instances} x {a.profile}, "
        f"{a.num_requests:,} requests per run, "
        + (f"{a.workers} processes" if executor.kind == LOCAL else f"executor {executor}")
    )
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("capacity searches", total=len(cells))

        def done(res: CellResult) -> None:
            desc = f"{res.cell.name}: {res.bound}{res.capacity_qps:.1f} req/s ({len(res.probes)} runs)"
            progress.update(task, advance=1, description=desc)

        results = run_cells(a, out / "runs", done, executor)
    wall = time.perf_counter() - t0
    summary = {"rows": summary_rows(a, results), "fleet_speed": fleet_speeds(a, results)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    details = {
        "settings": asdict(a),
        "wall_s": wall,
        "cells": [results[c].to_dict() for c in cells],
    }
    (out / "details.json").write_text(json.dumps(details, indent=2) + "\n")
    (out / "report.md").write_text(markdown(a, results, wall))
    for title, head, rows in tables(a, results):
        table = Table(title=title)
        for h in head:
            table.add_column(h, justify="left" if h == "policy" else "right")
        for r in rows:
            table.add_row(*r)
        console.print(table)
    runs = sum(len(r.probes) for r in results.values())
    cpu = sum(p["cpu_s"] for r in results.values() for p in r.probes)
    console.print(
        f"{runs} simulated runs in {wall:.0f} s ({cpu:.0f} CPU s in the runs); {out}/summary.json, "
        "report.md, details.json (every probe), runs/ (every run's per-request records)."
    )
    return summary
