"""`block experiment hetero`: policies on mixed fleets, where one instance is not as fast as another.

Two fleets of 12 Llama-2-7B instances with the paper's engine settings (chunked prefill 512 tokens per
step, at most 48 sequences), ShareGPT with dataset output lengths, Poisson arrivals:

- `mixed-a100-a30`: 6 on the A100 profile beside 6 on the A30 profile (each GPU its own KV-cache size:
  7,503 and 1,052 blocks); the A100 steps about twice as fast;
- `mixed-seqs`: 12 on the A30, half with max_num_seqs 24 and half with 48.

Block forecasts each instance with its own profile and settings; llumnix and infaas see free KV blocks per
running request, least-requests the requests in flight, round robin nothing. Capacity (the highest rate
with P99 TTFT <= 3 s) is searched per fleet and policy (block/sim/capacity.py). Then every
policy is run once more at one common rate per fleet, the best heuristic's capacity, and the requests each
instance kind served and their P99 TTFT there explain the capacities.

`--mode live` runs the same fleets at reduced scale (2 fast + 2 slow emulated engines) over a few rates,
and the simulator runs the same specs: their P99 E2E agree, or the report says by how much they do not.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from block.experiments.analysis import capacities, fmt, md_table
from block.experiments.plan import Runner, RunOutput, RunSpec
from block.fleet.engine_spec import EngineSpec
from block.sim.capacity import PAPER_SLO_S, CapacitySearch, Probe, search_capacities
from block.sim.workload import WorkloadSpec

POLICIES = ["block", "llumnix", "infaas", "least-requests", "round-robin"]
LIVE_POLICIES = ["block", "llumnix", "round-robin"]
# Each fleet: two kinds of instance, `per_kind` of each (6 in the simulator, 2 live).
FLEETS: dict[str, tuple[EngineSpec, EngineSpec]] = {
    "mixed-a100-a30": (EngineSpec("llama-2-7b-a100"), EngineSpec("llama-2-7b-a30")),
    "mixed-seqs": (
        EngineSpec("llama-2-7b-a30", max_num_seqs=48),
        EngineSpec("llama-2-7b-a30", max_num_seqs=24),
    ),
}
# First probes of the searches, for 12 instances (measured at 3,000 requests; the walk corrects them).
FIRST_GUESS = {
    "mixed-a100-a30": {
        "block": 64.0,
        "llumnix": 50.0,
        "infaas": 48.0,
        "least-requests": 54.0,
        "round-robin": 31.0,
    },
    "mixed-seqs": {
        "block": 37.0,
        "llumnix": 34.0,
        "infaas": 34.0,
        "least-requests": 32.0,
        "round-robin": 28.0,
    },
}
OTHER_GUESS = 30.0


@dataclass(frozen=True)
class HeteroArgs:
    fleets: list[str] = field(default_factory=lambda: list(FLEETS))
    policies: list[str] = field(default_factory=lambda: list(POLICIES))
    num_requests: int = 6_000
    per_kind: int = 6  # instances of each kind
    max_num_seqs: int = 48  # fleet-wide engine settings (the paper's); a fleet's entry overrides them
    max_num_batched_tokens: int = 512
    dataset: str = "sharegpt"
    seed: int = 0
    noise: float = 0.03
    slo_s: float = PAPER_SLO_S
    step: float = 0.06
    tolerance: float = 0.03
    max_probes: int = 8
    rates: list[float] = field(default_factory=list)  # live: a fixed grid instead of a search

    def __post_init__(self) -> None:
        unknown = [f for f in self.fleets if f not in FLEETS]
        if unknown:
            raise ValueError(f"unknown fleet {', '.join(unknown)} (known: {', '.join(FLEETS)})")

    def engines(self, fleet: str) -> tuple[EngineSpec, ...]:
        fast, slow = FLEETS[fleet]
        return (fast,) * self.per_kind + (slow,) * self.per_kind

    def spec(self, fleet: str, policy: str, qps: float, group: str = "") -> RunSpec:
        engines = self.engines(fleet)
        return RunSpec(
            policy,
            qps,
            label=policy,
            group=group or fleet,
            instances=len(engines),
            profile=engines[0].profile or "llama-2-7b-a30",
            max_num_seqs=self.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens,
            workload=WorkloadSpec(self.dataset, self.num_requests, "poisson", 1.0, self.seed),
            noise=self.noise,
            seed=self.seed,
            slos={"ttft_p99": self.slo_s},
            fleet=engines,
        )

    def guess(self, fleet: str, policy: str) -> float:
        return FIRST_GUESS.get(fleet, {}).get(policy, OTHER_GUESS) * (2 * self.per_kind) / 12


# -- per instance kind ------------------------------------------------------------------------------


def kind_of(a: HeteroArgs, fleet: str, instance: str | None) -> str | None:
    """`fast` or `slow` for a simulated instance id (`sim-R`), None for anything else."""
    if instance is None or not instance.startswith("sim-"):
        return None
    return "fast" if int(instance.removeprefix("sim-")) < a.per_kind else "slow"


def per_kind(a: HeteroArgs, fleet: str, o: RunOutput) -> dict[str, dict[str, Any]]:
    """Requests served, their share and P99 TTFT, per instance kind, from the run's results file."""
    requests = json.loads(o.path.read_text())["requests"]
    counts: Counter[str] = Counter()
    ttfts: dict[str, list[float]] = defaultdict(list)
    for r in requests:
        kind = kind_of(a, fleet, r.get("instance"))
        if kind is None:
            continue
        counts[kind] += 1
        if r.get("ttft_s") is not None:
            ttfts[kind].append(r["ttft_s"])
    total = sum(counts.values()) or 1
    fast, slow = FLEETS[fleet]
    return {
        kind: {
            "engine": (fast if kind == "fast" else slow).label(),
            "requests": counts[kind],
            "share": counts[kind] / total,
            "ttft_p99_s": float(np.percentile(ttfts[kind], 99)) if ttfts[kind] else None,
        }
        for kind in ("fast", "slow")
    }


# -- sim: capacity search ---------------------------------------------------------------------------


def run_sim(a: HeteroArgs, runner: Runner, out: Path, console: Console | None = None) -> dict[str, Any]:
    console = console or Console()
    runs = out / "runs"
    cells = {
        (fleet, policy): (lambda q, f=fleet, p=policy: a.spec(f, p, q), a.guess(fleet, policy))
        for fleet in a.fleets
        for policy in a.policies
    }

    searches = {
        key: CapacitySearch(guess, a.slo_s, a.step, a.tolerance, a.max_probes)
        for key, (_, guess) in cells.items()
    }
    outputs: dict[tuple[str, str], list[RunOutput]] = {key: [] for key in cells}

    def measure(todo: list[tuple[tuple[str, str], float]]) -> list[Probe]:
        done = runner.run([cells[key][0](q) for key, q in todo], runs)
        for (key, _), o in zip(todo, done, strict=True):
            outputs[key].append(o)
        return [Probe(o.spec.qps, o.summary["ttft_s"]["p99"]) for o in done]

    def progress(rounds: int, probes: int) -> None:
        console.print(f"capacity search round {rounds}: {probes} runs")

    caps = search_capacities(searches, measure, progress)
    fleets: dict[str, dict[str, Any]] = {f: {} for f in a.fleets}
    for (fleet, policy), cap in caps.items():
        fleets[fleet][policy] = {
            "capacity_qps": cap.qps,
            "bound": cap.bound,
            "probes": [
                {
                    "qps": o.spec.qps,
                    "ttft_p99_s": o.summary["ttft_s"]["p99"],
                    "e2e_p99_s": o.summary["e2e_s"]["p99"],
                }
                for o in sorted(outputs[(fleet, policy)], key=lambda o: o.spec.qps)
            ],
        }
    # One common rate per fleet: the best heuristic's capacity (block's where it is alone).
    load: dict[str, dict[str, Any]] = {}
    specs = []
    for fleet in a.fleets:
        others = [r["capacity_qps"] for p, r in fleets[fleet].items() if p != "block" and r["capacity_qps"]]
        rate = round(max(others or [fleets[fleet].get("block", {}).get("capacity_qps") or OTHER_GUESS]), 1)
        load[fleet] = {"qps": rate, "policies": {}}
        specs += [a.spec(fleet, p, rate, group=f"{fleet}-load") for p in a.policies]
    for o in runner.run(specs, runs):
        fleet = o.spec.group.removesuffix("-load")
        load[fleet]["policies"][o.spec.policy] = {
            "ttft_p99_s": o.summary["ttft_s"]["p99"],
            "e2e_p99_s": o.summary["e2e_s"]["p99"],
            "kinds": per_kind(a, fleet, o),
        }
    summary = {"mode": "sim", "args": _args(a), "fleets": fleets, "load": load}
    return _finish(a, summary, out, console)


# -- live: a few rates, and the simulator on the same specs -----------------------------------------


def run_live(
    a: HeteroArgs, live: Runner, sim: Runner, out: Path, console: Console | None = None
) -> dict[str, Any]:
    """Every fleet x policy x rate live, then in the simulator with the workload the live runs used."""
    console = console or Console()
    specs = [a.spec(f, p, q) for f in a.fleets for q in a.rates for p in a.policies]
    live_out = live.run(specs, out / "runs-live")
    # The live runner may shorten the workload (max_model_len): simulate what was actually run.
    effective = [getattr(live, "effective", lambda s: s)(s) for s in specs]
    sim_out = sim.run(effective, out / "runs-sim")
    fleets: dict[str, dict[str, Any]] = {f: {} for f in a.fleets}
    for fleet in a.fleets:
        mine = [o for o in live_out if o.spec.group == fleet]
        for policy, cap in capacities(mine, a.slo_s).items():
            fleets[fleet][policy] = {"capacity_qps": cap.qps, "bound": cap.bound}
    agreement = []
    for lo, so in zip(live_out, sim_out, strict=True):
        le, se = lo.summary["e2e_s"]["p99"], so.summary["e2e_s"]["p99"]
        rel = None if le is None or not se else (le - se) / se
        valid = lo.extra.get("validity", {}).get("valid")
        agreement.append(
            {
                "fleet": lo.spec.group,
                "policy": lo.spec.policy,
                "qps": lo.spec.qps,
                "live_e2e_p99_s": le,
                "sim_e2e_p99_s": se,
                "rel_diff": rel,
                "live_ttft_p99_s": lo.summary["ttft_s"]["p99"],
                "sim_ttft_p99_s": so.summary["ttft_s"]["p99"],
                "live_valid": valid,
            }
        )
    worst = max((abs(r["rel_diff"]) for r in agreement if r["rel_diff"] is not None), default=None)
    summary = {
        "mode": "live",
        "args": _args(a),
        "fleets": fleets,
        "sim_vs_live": {"runs": agreement, "max_abs_rel_diff_e2e_p99": worst},
    }
    return _finish(a, summary, out, console)


# -- reporting --------------------------------------------------------------------------------------


def _args(a: HeteroArgs) -> dict[str, Any]:
    from dataclasses import asdict

    return {**asdict(a), "fleet_kinds": {f: [e.label() for e in FLEETS[f]] for f in a.fleets}}


def _finish(a: HeteroArgs, summary: dict[str, Any], out: Path, console: Console) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    png = plot(summary, out / "hetero.png")
    summary["plot"] = png.name if png else None
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = report(a, summary)
    (out / "report.md").write_text(text)
    console.print(text)
    return summary


def report(a: HeteroArgs, summary: dict[str, Any]) -> str:
    mode = summary["mode"]
    lines = [
        f"# Heterogeneous fleets ({mode})",
        "",
        f"{a.num_requests:,} {a.dataset} requests, Poisson; {a.per_kind} + {a.per_kind} instances, "
        f"max_num_batched_tokens {a.max_num_batched_tokens}, max_num_seqs {a.max_num_seqs} unless the "
        f"kind says otherwise; step noise {a.noise:g}, seed {a.seed}.",
        "",
    ]
    for fleet, policies in summary["fleets"].items():
        fast, slow = FLEETS[fleet]
        lines += [f"## {fleet}: {a.per_kind} x {fast.label()} + {a.per_kind} x {slow.label()}", ""]
        block = policies.get("block", {}).get("capacity_qps")
        rows = []
        for policy, r in policies.items():
            cap = r["capacity_qps"]
            ratio = block / cap if block and cap else None
            rows.append([policy, f"{r.get('bound', '')}{fmt(cap, 1)}", fmt(ratio, 2)])
        lines += [
            md_table(["policy", f"capacity QPS (P99 TTFT <= {a.slo_s:g} s)", "block / policy"], rows),
            "",
        ]
        load = summary.get("load", {}).get(fleet)
        if load:
            lines += [f"Load per instance kind at {load['qps']:g} req/s (the best heuristic's capacity):", ""]
            rows = []
            for policy, r in load["policies"].items():
                k = r["kinds"]
                rows.append(
                    [
                        policy,
                        f"{k['fast']['requests']} ({k['fast']['share']:.0%})",
                        f"{k['slow']['requests']} ({k['slow']['share']:.0%})",
                        fmt(k["fast"]["ttft_p99_s"]),
                        fmt(k["slow"]["ttft_p99_s"]),
                        fmt(r["ttft_p99_s"]),
                    ]
                )
            headers = ["policy", f"served by {fast.label()}", f"by {slow.label()}", "P99 TTFT fast s"]
            lines += [md_table([*headers, "slow s", "all s"], rows), ""]
    agreement = summary.get("sim_vs_live")
    if agreement:
        lines += ["## Live against the simulator (same specs, same requests)", ""]
        rows = [
            [
                r["fleet"],
                r["policy"],
                f"{r['qps']:g}",
                fmt(r["live_e2e_p99_s"]),
                fmt(r["sim_e2e_p99_s"]),
                "-" if r["rel_diff"] is None else f"{r['rel_diff']:+.1%}",
                fmt(r["live_ttft_p99_s"]),
                fmt(r["sim_ttft_p99_s"]),
                {True: "valid", False: "INVALID", None: "-"}[r["live_valid"]],
            ]
            for r in agreement["runs"]
        ]
        headers = ["fleet", "policy", "QPS", "live P99 E2E s", "sim P99 E2E s", "diff", "live P99 TTFT s"]
        lines += [md_table([*headers, "sim P99 TTFT s", "live run"], rows), ""]
        worst = agreement["max_abs_rel_diff_e2e_p99"]
        lines += [f"Largest P99 E2E difference: {'-' if worst is None else f'{worst:.1%}'}.", ""]
    if summary.get("plot"):
        lines += [f"![capacity per fleet and policy]({summary['plot']})", ""]
    return "\n".join(lines)


def plot(summary: dict[str, Any], png: Path) -> Path | None:
    """Capacity per policy, one panel per fleet."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fleets = summary["fleets"]
    if not fleets:
        return None
    fig, axes = plt.subplots(1, len(fleets), figsize=(5 * len(fleets), 3.6), squeeze=False)
    for ax, (fleet, policies) in zip(axes[0], fleets.items(), strict=True):
        names = list(policies)
        caps = [policies[p]["capacity_qps"] or 0.0 for p in names]
        colors = ["tab:blue" if p == "block" else "tab:gray" for p in names]
        ax.bar(range(len(names)), caps, color=colors)
        for x, c in enumerate(caps):
            if c and not math.isnan(c):
                ax.text(x, c, f"{c:.1f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_ylabel("capacity, req/s (P99 TTFT <= 3 s)")
        ax.set_title(f"{fleet} ({summary['mode']})")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def live_args(a: HeteroArgs) -> HeteroArgs:
    """The reduced live scale: 2 fast + 2 slow engines, a few hundred requests, three rates."""
    return replace(
        a,
        per_kind=2,
        policies=a.policies if a.policies != POLICIES else list(LIVE_POLICIES),
        num_requests=a.num_requests if a.num_requests != HeteroArgs.num_requests else 300,
        rates=a.rates or [8.0, 12.0, 16.0],
    )
