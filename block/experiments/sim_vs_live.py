"""`block experiment sim-vs-live`: the same reduced-scale workload through the simulator and live.

Both modes run the same specs (4 instances, a few policies and rates, a few hundred ShareGPT requests),
each writing `{spec.name}.json`. The report puts P99 TTFT and P99 E2E side by side per run with the
relative difference; the goal is agreement within 10%. Run it once per mode into the same --out
(`runs-sim/`, `runs-live/`); the report compares whatever both folders hold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from block.experiments.analysis import fmt, md_table
from block.experiments.plan import Runner, RunSpec
from block.experiments.progress import run_all
from block.sim.workload import WorkloadSpec

GOAL = 0.10


@dataclass(frozen=True)
class SimVsLiveArgs:
    policies: list[str] = field(default_factory=lambda: ["block", "llumnix", "round-robin"])
    rates: list[float] = field(default_factory=lambda: [6.0, 9.0])
    num_requests: int = 400
    instances: int = 4
    profile: str = "llama-2-7b-a30"
    seed: int = 0


def plan(a: SimVsLiveArgs) -> list[RunSpec]:
    workload = WorkloadSpec("sharegpt", a.num_requests, "poisson", 1.0, a.seed)
    return [
        RunSpec(p, q, instances=a.instances, profile=a.profile, workload=workload, seed=a.seed)
        for p in a.policies
        for q in a.rates
    ]


def compare(out: Path) -> tuple[str, dict]:
    sim_dir, live_dir = out / "runs-sim", out / "runs-live"
    rows, data = [], {}
    for f in sorted(sim_dir.glob("*.json")) if sim_dir.is_dir() else []:
        other = live_dir / f.name
        if not other.is_file():
            continue
        s = json.loads(f.read_text())["summary"]
        live = json.loads(other.read_text())["summary"]
        entry = {}
        for metric in ("ttft_s", "e2e_s"):
            sv, lv = s[metric]["p99"], live[metric]["p99"]
            entry[metric] = {"sim": sv, "live": lv, "diff": None if not sv or not lv else (sv - lv) / lv}
        data[f.stem] = entry
        rows.append(
            [
                f.stem,
                fmt(entry["ttft_s"]["sim"], 3),
                fmt(entry["ttft_s"]["live"], 3),
                _pct(entry["ttft_s"]["diff"]),
                fmt(entry["e2e_s"]["sim"]),
                fmt(entry["e2e_s"]["live"]),
                _pct(entry["e2e_s"]["diff"]),
            ]
        )
    within = [abs(e[m]["diff"]) <= GOAL for e in data.values() for m in e if e[m]["diff"] is not None]
    text = "\n".join(
        [
            "# Simulator vs live",
            "",
            md_table(
                [
                    "run",
                    "P99 TTFT sim s",
                    "P99 TTFT live s",
                    "diff",
                    "P99 E2E sim s",
                    "P99 E2E live s",
                    "diff",
                ],
                rows,
            )
            if rows
            else "No run has results in both runs-sim/ and runs-live/ yet.",
            "",
            f"Within {GOAL:.0%}: {sum(within)}/{len(within)} comparisons." if within else "",
            "",
        ]
    )
    return text, data


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:+.1f}%"


def run(a: SimVsLiveArgs, runner: Runner, out: Path, console: Console | None = None) -> dict:
    console = console or Console()
    run_all(runner, plan(a), out / f"runs-{runner.mode}", console)
    text, data = compare(out)
    (out / "report.md").write_text(text)
    (out / "comparison.json").write_text(json.dumps(data, indent=2) + "\n")
    console.print(text)
    return data
