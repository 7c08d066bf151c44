"""`block experiment main`: the paper's Figure 6 - every policy over a rate sweep on the paper's cluster.

12 instances of Llama-2-7B on the A30 profile, chunked prefill with 512 tokens per step, at most 48
sequences, 10,000 ShareGPT requests with their dataset output lengths (ignore_eos), Poisson arrivals at
20-36 requests/s. Reports mean and P99 TTFT and E2E, throughput, capacity at P99 TTFT <= 3 s, the
capacity ratio of block over each other policy, and how close the capacities are to the paper's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from block.experiments.analysis import capacities, fmt, md_table, plot_sweep, ratio
from block.experiments.plan import Runner, RunOutput, RunSpec
from block.experiments.progress import run_all
from block.sim.capacity import PAPER_SLO_S, write_capacity_files
from block.sim.workload import WorkloadSpec

ALL_POLICIES = [
    "block",
    "llumnix",
    "infaas",
    "min-qpm",
    "least-requests",
    "round-robin",
    "random",
    "block-po2",
]
# The paper's capacities (later revision): Llumnix- is its Llumnix without migration, our `llumnix`.
PAPER_CAPACITY = {"block": 31.0, "llumnix": 30.6, "round-robin": 27.2}
PAPER_NOTE = "round robin's 27.2 is reported at max 24 sequences; block's and Llumnix-'s at 48"


@dataclass(frozen=True)
class MainArgs:
    policies: list[str] = field(default_factory=lambda: list(ALL_POLICIES))
    rates: list[float] = field(default_factory=lambda: [20.0 + 2 * i for i in range(9)])
    num_requests: int = 10_000
    instances: int = 12
    profile: str = "llama-2-7b-a30"
    max_num_seqs: int = 48
    max_num_batched_tokens: int = 512
    dataset: str = "sharegpt"
    seed: int = 0
    noise: float = 0.03
    # A policy meeting the SLO at the highest rate has only a lower bound: sweep on for it, one step at a
    # time, up to this multiple of the highest rate, so ratios compare measured capacities.
    extend_to: float = 1.5


def plan(a: MainArgs, rates: list[float] | None = None, policies: list[str] | None = None) -> list[RunSpec]:
    workload = WorkloadSpec(a.dataset, a.num_requests, "poisson", 1.0, a.seed)
    return [
        RunSpec(
            policy,
            qps,
            instances=a.instances,
            profile=a.profile,
            max_num_seqs=a.max_num_seqs,
            max_num_batched_tokens=a.max_num_batched_tokens,
            workload=workload,
            noise=a.noise,
            seed=a.seed,
        )
        for policy in policies or a.policies
        for qps in rates or a.rates
    ]


def report(a: MainArgs, outputs: list[RunOutput], mode: str, png: Path | None) -> tuple[str, dict]:
    caps = capacities(outputs, PAPER_SLO_S)
    ref = caps.get("block")
    lines = [
        f"# Figure 6 ({mode}): policies on {a.instances} x {a.profile}",
        "",
        f"{a.num_requests:,} {a.dataset} requests, Poisson, rates {a.rates[0]:g}-{a.rates[-1]:g} req/s; "
        f"max_num_seqs {a.max_num_seqs}, max_num_batched_tokens {a.max_num_batched_tokens}; "
        f"step noise {a.noise:g}, seed {a.seed}; prefix caching off, as in the paper (vLLM 0.7.2). "
        f"Policies still within the SLO at {a.rates[-1]:g} req/s "
        f"are swept on in steps of the grid (up to {a.rates[-1] * a.extend_to:g} req/s) to measure their "
        "capacity.",
        "",
        "## Capacity (highest rate with P99 TTFT <= 3 s)",
        "",
        "Interpolated between the last rate that meets the SLO and the first that does not, linearly in "
        "log(P99 TTFT); `>=` / `<`: every / no rate met it.",
        "",
    ]
    rows = []
    for label, cap in caps.items():
        r = ratio(ref, cap) if ref is not None else None
        paper = PAPER_CAPACITY.get(label)
        off = f"{(cap.qps - paper) / paper * 100:+.1f}%" if paper and cap.qps is not None else "-"
        rows.append([label, str(cap), fmt(r, 3), "-" if paper is None else f"{paper:g}", off])
    lines += [md_table(["policy", "capacity QPS", "block / policy", "paper QPS", "vs paper"], rows), ""]
    lines += [f"Paper: {PAPER_NOTE}.", ""]
    lines += ["## Latency per rate", ""]
    rows = []
    for o in sorted(outputs, key=lambda o: (o.spec.qps, a.policies.index(o.spec.policy))):
        s = o.summary
        rows.append(
            [
                f"{o.spec.qps:g}",
                o.spec.display,
                fmt(s["ttft_s"]["mean"], 3),
                fmt(s["ttft_s"]["p99"]),
                fmt(s["e2e_s"]["mean"]),
                fmt(s["e2e_s"]["p99"]),
                fmt(s["request_throughput"]),
                fmt(s["output_token_throughput"], 0),
            ]
        )
    lines += [
        md_table(
            ["QPS", "policy", "TTFT mean s", "TTFT P99 s", "E2E mean s", "E2E P99 s", "req/s", "out tok/s"],
            rows,
        ),
        "",
    ]
    if png is not None:
        lines += [f"![Figure 6]({png.name})", ""]
    data = {
        "capacity": {k: {"qps": c.qps, "bound": c.bound} for k, c in caps.items()},
        "block_over": {k: ratio(ref, c) for k, c in caps.items()} if ref else {},
        "paper_capacity": PAPER_CAPACITY,
    }
    return "\n".join(lines), data


def extend(
    a: MainArgs, runner: Runner, runs_dir: Path, outputs: list[RunOutput], console: Console
) -> list[RunOutput]:
    """Sweep on past the grid for policies whose capacity is only a lower bound."""
    step = a.rates[-1] - a.rates[-2] if len(a.rates) > 1 else a.rates[-1] * 0.1
    qps, extra = a.rates[-1], []
    while True:
        censored = [p for p, c in capacities(outputs + extra, PAPER_SLO_S).items() if c.bound == ">="]
        qps = round(qps + step, 6)
        if not censored or qps > a.rates[-1] * a.extend_to:
            return extra
        extra += run_all(runner, plan(a, [qps], censored), runs_dir, console)


def run(a: MainArgs, runner: Runner, out: Path, console: Console | None = None) -> dict:
    console = console or Console()
    runs_dir = out / "runs"
    outputs = run_all(runner, plan(a), runs_dir, console)
    outputs += extend(a, runner, runs_dir, outputs, console)
    caps = capacities(outputs, PAPER_SLO_S)
    write_capacity_files(caps, runs_dir)
    png = plot_sweep(runs_dir, out / "figure6.png", f"Figure 6 ({runner.mode}): {a.instances} x {a.profile}")
    text, data = report(a, outputs, runner.mode, png)
    (out / "report.md").write_text(text)
    (out / "capacity.json").write_text(json.dumps(data, indent=2) + "\n")
    console.print(text)
    return data
