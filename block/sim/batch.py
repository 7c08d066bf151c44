"""Many simulated runs (policy x rate x config) on an executor (block/sim/executor.py), one results JSON each.

Workloads are loaded once in the parent; each run gets its request columns, simulates and returns its
results document (the `block bench` schema); the parent writes `{name}.json` and keeps only the summary.
Runs are handed out as workers free up, so memory holds the runs in flight only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from block.bench.results import build_results, write_results
from block.sim.capacity import PAPER_SLO_S
from block.sim.config import SimConfig
from block.sim.executor import ExecutorSpec, run_each
from block.sim.requests import SimRequests
from block.sim.simulator import SimOutcome, simulate
from block.sim.workload import WorkloadSpec, requests_for

DEFAULT_SLOS = {"ttft_p99": PAPER_SLO_S}


@dataclass(frozen=True)
class SimRun:
    config: SimConfig  # the cluster, policy included
    workload: WorkloadSpec
    qps: float
    label: str = ""  # how plots and tables name this variant (default: the policy)
    group: str = ""  # an experiment's grouping key (e.g. a Table 2 row); part of the file name
    slos: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SLOS))
    keep_itl: bool = False  # keep per-request inter-token gaps in the file (large: one float per token)
    give_up_ttft_s: float | None = None  # stop once P99 TTFT is certainly over this (sim/early_stop.py)

    @property
    def name(self) -> str:
        return run_name(self.group, self.label or self.config.policy, self.qps)

    def results_config(self, outcome: SimOutcome) -> dict[str, Any]:
        """The results file's `config`: what `block bench` writes, plus how the cluster was simulated."""
        cfg = self.config
        return {
            "mode": "sim",
            "label": self.label or cfg.policy,
            "group": self.group,
            "policy": cfg.policy,
            "qps": self.qps,
            **self.workload.to_dict(),
            "ignore_eos": True,
            "instances": cfg.instances,
            "profile": cfg.profile,
            **({"fleet": [e.label() for e in cfg.fleet]} if cfg.fleet else {}),
            **({"give_up_ttft_s": self.give_up_ttft_s} if self.give_up_ttft_s is not None else {}),
            "engine": outcome.stats.get("engine", {}),
            "sim": {**cfg.to_dict(), "stats": {k: v for k, v in outcome.stats.items() if k != "engine"}},
        }

    def written_by(self, results: dict[str, Any]) -> bool:
        """Was this results document produced by a run with exactly these settings?"""
        cfg = results.get("config", {})
        sim = {k: v for k, v in cfg.get("sim", {}).items() if k != "stats"}
        workload = {k: cfg.get(k) for k in self.workload.to_dict()}
        # JSON turns tuples into lists: compare through a JSON round trip
        same = json.loads(json.dumps(self.config.to_dict())) == sim
        return (
            same
            and workload == self.workload.to_dict()
            and cfg.get("qps") == self.qps
            and cfg.get("give_up_ttft_s") == self.give_up_ttft_s
            and results.get("summary", {}).get("slos") == self.slos
        )


@dataclass(frozen=True)
class RunResult:
    run: SimRun
    path: Path
    summary: dict[str, Any]
    stats: dict[str, Any]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-")


def run_name(group: str, label: str, qps: float) -> str:
    """A results file's stem: `[group_]label_qpsRATE`, each part reduced to safe characters."""
    parts = [_slug(group)] if group else []
    return "_".join([*parts, _slug(label), f"qps{qps:g}"])


def simulate_run(run: SimRun, requests: SimRequests) -> tuple[dict[str, Any], dict[str, Any]]:
    """Simulate one run: its results document and the simulator's counters. Writes nothing, so it can
    run on any machine."""
    outcome = simulate(run.config, requests, give_up_ttft_s=run.give_up_ttft_s)
    results = build_results(run.results_config(outcome), outcome.records, outcome.duration_s, run.slos)
    if not run.keep_itl:
        for r in results["requests"]:
            r["itl_s"] = []  # the summary's itl_s was computed from them; the file stays small
    return results, outcome.stats


def save(run: SimRun, results: dict[str, Any], stats: dict[str, Any], out_dir: Path) -> RunResult:
    path = out_dir / f"{run.name}.json"
    write_results(results, path)
    return RunResult(run, path, results["summary"], stats)


def execute(run: SimRun, requests: SimRequests, out_dir: Path) -> RunResult:
    """Simulate one run here and write its results file."""
    return save(run, *simulate_run(run, requests), out_dir)


def reuse(run: SimRun, out_dir: Path) -> RunResult | None:
    """The run's existing results file, if one was written by the same run (same key)."""
    path = out_dir / f"{run.name}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not run.written_by(data):
        return None
    return RunResult(run, path, data["summary"], data["config"]["sim"]["stats"])


def run_many(
    runs: Sequence[SimRun],
    out_dir: Path,
    workers: int = 2,
    on_done: Callable[[RunResult], None] | None = None,
    resume: bool = False,
    executor: ExecutorSpec = ExecutorSpec(),
) -> list[RunResult]:
    """Execute `runs` on `executor` (`workers`: its local processes); results returned in the order of
    `runs`. With `resume`, runs whose results file already exists from the same settings are read back
    instead of rerun."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError("two runs would write the same file; give them distinct labels or groups")
    results: list[RunResult | None] = [None] * len(runs)

    def done(i: int, res: RunResult) -> None:
        results[i] = res
        if on_done is not None:
            on_done(res)

    todo = []
    for i, run in enumerate(runs):
        old = reuse(run, out_dir) if resume else None
        if old is not None:
            done(i, old)
        else:
            todo.append((i, run))
    if todo:
        with executor.open(workers if len(todo) > 1 else 1) as pool:
            jobs = ((run, requests_for(run.workload, run.qps)) for _, run in todo)
            for j, (doc, stats) in run_each(pool, simulate_run, jobs):
                i, run = todo[j]
                done(i, save(run, doc, stats, out_dir))
    return [r for r in results if r is not None]
