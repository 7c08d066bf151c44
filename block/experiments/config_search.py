"""`block experiment config-search`: the paper's Table 2 - capacity per engine configuration and policy.

Rows: (max_num_seqs, max_num_batched_tokens) in {(48, 512), (24, 512), (48, 2048)} on the A30 profile
with ShareGPT, plus extension rows: another model's profile with its own engine defaults, and arXiv
summarisation lengths (long prompts) when the trace is present.

Each row's rate grid comes from a pilot: round robin with every request sent at once measures the
cluster's saturated throughput X; the sweep then covers `fractions` x X, where the P99 TTFT crosses
3 s for any reasonable policy. `--qps` replaces the pilot with a fixed grid for every row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from block.experiments.analysis import capacities, fmt, md_table, ratio
from block.experiments.plan import Runner, RunOutput, RunSpec
from block.experiments.progress import run_all
from block.sim.capacity import PAPER_SLO_S
from block.sim.workload import WorkloadSpec

ARXIV_TRACE = Path("/work/shared/data/traces/arxiv_summarization_stats_llama2_tokenizer.csv")
FRACTIONS = (0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0, 1.05)
PILOT_REQUESTS = 2000


@dataclass(frozen=True)
class Row:
    name: str
    profile: str = "llama-2-7b-a30"
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    dataset: str = "sharegpt"
    extension: bool = False
    process: str = "poisson"  # arrivals; "gamma" with `burstiness` its CV (bursty)
    burstiness: float = 1.0

    @property
    def arrivals(self) -> str:
        return "Poisson" if self.process == "poisson" else f"{self.process} CV {self.burstiness:g}"


def default_rows(arxiv: Path = ARXIV_TRACE) -> list[Row]:
    rows = [
        Row("48x512", max_num_seqs=48, max_num_batched_tokens=512),
        Row("24x512", max_num_seqs=24, max_num_batched_tokens=512),
        Row("48x2048", max_num_seqs=48, max_num_batched_tokens=2048),
        Row("llama-3-8b-a100", profile="llama-3-8b-a100", extension=True),  # its own engine defaults
        # The paper's extension experiment: Qwen2-7B on the A30 with the paper's engine settings, ShareGPT
        # Poisson and bursty (its bursty dataset is not available offline: gamma arrivals, CV 3).
        Row(
            "qwen2-7b-a30",
            profile="qwen2-7b-a30",
            max_num_seqs=48,
            max_num_batched_tokens=512,
            extension=True,
        ),
        Row(
            "qwen2-7b-a30-bursty",
            profile="qwen2-7b-a30",
            max_num_seqs=48,
            max_num_batched_tokens=512,
            process="gamma",
            burstiness=3.0,
            extension=True,
        ),
    ]
    if arxiv.is_file():
        rows.append(
            Row(
                "arxiv-48x512",
                max_num_seqs=48,
                max_num_batched_tokens=512,
                dataset=f"arxiv:{arxiv}",
                extension=True,
            )
        )
    return rows


@dataclass(frozen=True)
class ConfigSearchArgs:
    policies: list[str] = field(default_factory=lambda: ["block", "llumnix", "round-robin"])
    rows: list[Row] = field(default_factory=default_rows)
    num_requests: int = 10_000
    rates: list[float] | None = None  # fixed grid for every row (skips the pilots)
    fractions: tuple[float, ...] = FRACTIONS
    instances: int = 12
    seed: int = 0


def _spec(a: ConfigSearchArgs, row: Row, policy: str, qps: float, n: int, group: str) -> RunSpec:
    return RunSpec(
        policy,
        qps,
        group=group,
        instances=a.instances,
        profile=row.profile,
        max_num_seqs=row.max_num_seqs,
        max_num_batched_tokens=row.max_num_batched_tokens,
        workload=WorkloadSpec(row.dataset, n, row.process, row.burstiness, a.seed),
        seed=a.seed,
    )


def pilot_specs(a: ConfigSearchArgs) -> list[RunSpec]:
    n = min(a.num_requests, PILOT_REQUESTS)
    return [_spec(a, row, "round-robin", float("inf"), n, f"pilot-{row.name}") for row in a.rows]


def grids(a: ConfigSearchArgs, pilots: list[RunOutput]) -> dict[str, list[float]]:
    if a.rates is not None:
        return {row.name: list(a.rates) for row in a.rows}
    out = {}
    for row, p in zip(a.rows, pilots, strict=True):
        x = p.summary["request_throughput"]
        out[row.name] = sorted({round(f * x, 1) for f in a.fractions})
    return out


def plan(a: ConfigSearchArgs, rates: dict[str, list[float]]) -> list[RunSpec]:
    return [
        _spec(a, row, policy, qps, a.num_requests, row.name)
        for row in a.rows
        for policy in a.policies
        for qps in rates[row.name]
    ]


def report(
    a: ConfigSearchArgs, outputs: list[RunOutput], rates: dict[str, list[float]], mode: str
) -> tuple[str, dict]:
    caps = capacities(outputs, PAPER_SLO_S, key=lambda o: f"{o.spec.group}|{o.spec.policy}")
    headers = ["config", "profile", "dataset", "arrivals", *[f"{p} QPS" for p in a.policies]]
    others = [p for p in a.policies if p != "block"]
    if "block" in a.policies:
        headers += [f"block / {p}" for p in others]
    rows, data = [], {}
    for row in a.rows:
        cells = [row.name + (" (ext)" if row.extension else ""), row.profile, row.dataset.split(":")[0]]
        cells.append(row.arrivals)
        row_caps = {p: caps.get(f"{row.name}|{p}") for p in a.policies}
        cells += [str(c) if c else "-" for c in row_caps.values()]
        if "block" in a.policies:
            for p in others:
                b, o = row_caps["block"], row_caps[p]
                cells.append(fmt(ratio(b, o), 3) if b and o else "-")
        rows.append(cells)
        data[row.name] = {
            "profile": row.profile,
            "dataset": row.dataset,
            "arrivals": {"process": row.process, "burstiness": row.burstiness},
            "max_num_seqs": row.max_num_seqs,
            "max_num_batched_tokens": row.max_num_batched_tokens,
            "rates": rates[row.name],
            "capacity": {
                p: None if c is None else {"qps": c.qps, "bound": c.bound} for p, c in row_caps.items()
            },
        }
    text = "\n".join(
        [
            f"# Table 2 ({mode}): capacity per engine configuration",
            "",
            f"{a.instances} instances, {a.num_requests:,} requests per run. Capacity: highest rate "
            "with P99 TTFT <= 3 s, log-interpolated between rates (`>=`/`<`: censored by the grid). "
            "Rate grids: "
            + (
                "fixed (--qps)."
                if a.rates is not None
                else "fractions of each row's saturated throughput, measured by a round-robin pilot with "
                "every request sent at once."
            ),
            "",
            md_table(headers, rows),
            "",
            "Rows marked (ext) extend the paper's table: another model and GPU with its own engine defaults, "
            "Qwen2-7B on the A30 (the paper's extension experiment; profile derived from Llama-2-7B's "
            "measurements, lengths in the workload's tokens) with Poisson and bursty (gamma, CV 3) "
            "arrivals, and arXiv summarisation lengths (long prompts, short outputs).",
            "",
        ]
    )
    return text, data


def run(a: ConfigSearchArgs, runner: Runner, out: Path, console: Console | None = None) -> dict:
    console = console or Console()
    runs_dir = out / "runs"
    pilots = [] if a.rates is not None else run_all(runner, pilot_specs(a), out / "pilots", console)
    rates = grids(a, pilots)
    outputs = run_all(runner, plan(a, rates), runs_dir, console)
    text, data = report(a, outputs, rates, runner.mode)
    (out / "report.md").write_text(text)
    (out / "table2.json").write_text(json.dumps(data, indent=2) + "\n")
    _plots(a, runs_dir, out, console)
    console.print(text)
    return data


def _plots(a: ConfigSearchArgs, runs_dir: Path, out: Path, console: Console) -> None:
    """One Figure 6 style plot per row, from that row's results files."""
    import shutil
    import tempfile

    from block.experiments.analysis import plot_sweep

    for row in a.rows:
        files = sorted(runs_dir.glob(f"{row.name}_*.json"))
        if not files:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            for f in files:
                shutil.copy(f, Path(tmp) / f.name)
            plot_sweep(Path(tmp), out / f"table2_{row.name}.png", f"Table 2 row {row.name}")
