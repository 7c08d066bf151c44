"""`block experiment prefix`: capacity and prefix-cache hit rate of every policy on prefix-heavy workloads.

Workloads (dataset spec strings, `block.workload.load`):
- `sharegpt-chat`: multi-turn ShareGPT sessions, each turn's prompt the whole history plus the new user
  turn, sent a think time (exponential, mean 5 s) after the previous answer; the rate starts sessions.
- `shared-prefix:32:1024`: ShareGPT questions behind one of 32 system prompts of 1,024 tokens, the
  shape of SGLang's and llm-d's prefix benchmarks. Sized so that where a prompt goes matters: the 32
  prompts together (32k tokens) are twice what one A30 instance's KV cache holds (1,052 blocks of 16),
  so an instance sent every group keeps only some cached, while a 12th of them (about 3 groups) takes a
  sixth of it. With 8 groups (8k tokens) every instance keeps all of them whatever the router does
  (round-robin measured 77% of prompt tokens from cache at 24 req/s, cache-aware 85%): that tests little.
- `sharegpt`: first turns only; no prompt shares a block with another, the control (caching must change
  nothing there).

Policies: block (the cache enters its forecast), the peers' cache-aware baselines (cache-aware,
prefix-load, kv-overlap) and the cache-blind llumnix and round-robin. Prefix caching is on in every
engine (vLLM V1's default).
`ceiling`, asked for by name (sim only), is llumnix on replicas where every prompt block computed anywhere
counts as cached (block/replica/ceiling_cache.py): the most any cache affinity could add.

`--mode sim` (the paper's 12 x A30, chunk 512, 48 sequences): per workload and policy a capacity search
(highest rate with P99 TTFT <= 3 s; block/sim/capacity.py), every search advancing one probe per
round so the runs of a round share the worker processes; then every policy at one fixed rate per workload,
the capacity of the best cache-blind policy (where it just meets the SLO), for P99 TTFT and E2E and each
policy's hit rate. `--mode live` (4 emulated engines behind the router) runs fixed rates only; its
capacity is read off those rates (a bound when all or none meet the SLO).

Run length: 4,000 requests (turns) per run. Sessions need it: each turn waits for the answer before it
plus a think time, so 1,200 turns arrive at under 20 req/s on average whatever the session rate and never
load the cluster (every search then ends as a lower bound). Shorter runs also inflate capacities (first-turn
ShareGPT, block: about 58 req/s at 1,200 requests, 41 at 4,000; the paper's 10,000: about 31-37).
Measured: 106 runs, 10 min 39 s on a quiet 2-core machine (load at most 2.0, its own two workers), 1,109
CPU seconds of simulation.

Hit rate: the share of prompt tokens served from the prefix cache, in tokens, as vLLM's counters
(`vllm:prefix_cache_hits / vllm:prefix_cache_queries`: looked up at admission, preempted requests left
out). Writes `summary.json` (`{"workloads": {WORKLOAD: {POLICY: {"capacity_qps", "hit_rate"}}}}`),
`details.json` (every probe, per-instance counters), `report.md`, `figure6_prefix.png` and one results
file per run under `runs/`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from block.experiments.analysis import capacities, fmt, md_table
from block.experiments.plan import Runner, RunOutput, RunSpec
from block.experiments.progress import run_all
from block.sim.capacity import PAPER_SLO_S, Capacity, CapacitySearch, Probe, search_capacities
from block.sim.workload import WorkloadSpec

DEFAULT_WORKLOADS = ["sharegpt-chat", "shared-prefix:32:1024", "sharegpt"]
DEFAULT_POLICIES = ["block", "cache-aware", "prefix-load", "kv-overlap", "llumnix", "round-robin"]
CACHE_BLIND = ("llumnix", "round-robin", "least-requests", "po2", "random", "min-qpm", "infaas")
CACHE_AWARE_BASELINES = ("cache-aware", "prefix-load", "kv-overlap")
# Not a policy: llumnix on replicas where every prompt block computed anywhere is cached everywhere
# (block/replica/ceiling_cache.py), the most cache affinity could add to the best cache-blind policy.
# Sim only, and only when asked for (`--policies ...,ceiling`).
CEILING = "ceiling"
# First probes of the searches, req/s (sessions/s for sessions) on 12 instances: near the capacities
# measured with the defaults (4,000 turns: chat 4.5-6.1, shared prompts 9.6-20, first turns 33-41), so
# most searches bracket in a step or two; an overloaded probe is the slowest kind (deep queues).
FIRST_GUESS = {"sharegpt-chat": 6.0, "shared-prefix:32:1024": 19.0, "sharegpt": 38.0}
OTHER_GUESS = 20.0
# Live (4 emulated engines): fixed rates per workload, around the simulated capacities scaled to 4.
LIVE_RATES = {"sharegpt-chat": [2.0, 3.0], "shared-prefix:32:1024": [6.0, 9.0], "sharegpt": [8.0, 11.0]}
LIVE_OTHER_RATES = [4.0, 6.0]


@dataclass(frozen=True)
class PrefixArgs:
    workloads: list[str] = field(default_factory=lambda: list(DEFAULT_WORKLOADS))
    policies: list[str] = field(default_factory=lambda: list(DEFAULT_POLICIES))
    num_requests: int = 4_000  # per run; for sessions, turns (1,200 turns never load the cluster)
    instances: int = 12
    profile: str = "llama-2-7b-a30"
    max_num_seqs: int = 48
    max_num_batched_tokens: int = 512
    max_model_len: int = 4096
    think_time_s: float = 5.0
    seed: int = 0
    noise: float = 0.03
    slo_s: float = PAPER_SLO_S
    step: float = 0.08  # the search's walk: 8%, 16%, ... from the first guess
    tolerance: float = 0.04  # bisect until the bracket is narrower than this share of the rate
    max_probes: int = 8  # per search
    # live: fixed rates per workload (None: LIVE_RATES); sim: ignored (capacity searches)
    rates: dict[str, list[float]] | None = None

    def __post_init__(self) -> None:
        if not self.workloads or not self.policies:
            raise ValueError("no workloads or no policies given")

    def workload(self, dataset: str) -> WorkloadSpec:
        return WorkloadSpec(
            dataset,
            self.num_requests,
            "poisson",
            1.0,
            self.seed,
            max_model_len=self.max_model_len,
            think_time_s=self.think_time_s,
        )

    def spec(self, dataset: str, policy: str, qps: float) -> RunSpec:
        ceiling = policy == CEILING
        return RunSpec(
            "llumnix" if ceiling else policy,
            qps,
            label=CEILING if ceiling else "",
            prefix_ceiling=ceiling,
            group=dataset,
            instances=self.instances,
            profile=self.profile,
            max_num_seqs=self.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens,
            prefix_caching=True,  # vLLM V1's default, and what this experiment is about
            workload=self.workload(dataset),
            noise=self.noise,
            seed=self.seed,
            slos={"ttft_p99": self.slo_s},
        )

    def guess(self, dataset: str) -> float:
        return FIRST_GUESS.get(dataset, OTHER_GUESS) * self.instances / 12

    def live_rates(self, dataset: str) -> list[float]:
        table = self.rates if self.rates is not None else LIVE_RATES
        return list(table.get(dataset, LIVE_OTHER_RATES))


Cell = tuple[str, str]  # (workload, policy)


# -- measuring ---------------------------------------------------------------------------------------


class _Measured:
    """Every run so far by (workload, policy, rate): a search probing a rate twice reads it back."""

    def __init__(self, a: PrefixArgs, runner: Runner, runs_dir: Path, console: Console) -> None:
        self.a, self.runner, self.runs_dir, self.console = a, runner, runs_dir, console
        self.outputs: dict[tuple[str, str, float], RunOutput] = {}

    def run(self, wanted: list[tuple[str, str, float]]) -> None:
        todo = sorted({w for w in wanted if w not in self.outputs}, key=wanted.index)
        if not todo:
            return
        specs = [self.a.spec(*w) for w in todo]
        for w, o in zip(todo, run_all(self.runner, specs, self.runs_dir, self.console), strict=True):
            self.outputs[w] = o

    def p99_ttft(self, w: tuple[str, str, float]) -> float | None:
        s = self.outputs[w].summary
        return s["ttft_s"]["p99"] if s.get("failed", 0) == 0 else None


def search_all(a: PrefixArgs, measured: _Measured) -> dict[Cell, Capacity]:
    """One capacity search per (workload, policy), all advanced a probe per round."""
    searches = {
        (w, p): CapacitySearch(a.guess(w), a.slo_s, a.step, a.tolerance, a.max_probes)
        for w in a.workloads
        for p in a.policies
    }

    def measure(todo: list[tuple[Cell, float]]) -> list[Probe]:
        measured.run([(w, p, q) for (w, p), q in todo])
        return [Probe(q, measured.p99_ttft((*cell, q))) for cell, q in todo]

    return search_capacities(searches, measure)


def fixed_rate(a: PrefixArgs, caps: dict[Cell, Capacity], dataset: str) -> float:
    """The best cache-blind policy's capacity (it just meets the SLO there); without one, the lowest."""
    blind = [caps[(dataset, p)].qps for p in a.policies if p in CACHE_BLIND]
    pool = [q for q in blind if q is not None] or [
        c.qps for (w, _), c in caps.items() if w == dataset and c.qps is not None
    ]
    return round(max(pool) if blind else min(pool), 3)


def hit_rate(o: RunOutput) -> float | None:
    """Share of prompt tokens served from the prefix cache (vLLM's counters; sim or live)."""
    stats = o.extra.get("sim") or o.extra.get("live") or {}
    queries, hits = stats.get("prefix_cache_queries"), stats.get("prefix_cache_hits")
    if queries is None or hits is None:
        return None
    q = sum(queries) if isinstance(queries, list) else queries
    h = sum(hits) if isinstance(hits, list) else hits
    return h / q if q else 0.0


def per_instance(o: RunOutput) -> dict[str, Any] | None:
    """Sim: each instance's share of the prompt tokens admitted and its own hit rate."""
    stats = o.extra.get("sim") or {}
    queries, hits = stats.get("prefix_cache_queries"), stats.get("prefix_cache_hits")
    if not isinstance(queries, list) or not isinstance(hits, list) or not sum(queries):
        return None
    total = sum(queries)
    return {
        "prompt_token_share": [q / total for q in queries],
        "hit_rate": [h / q if q else 0.0 for q, h in zip(queries, hits, strict=True)],
    }


# -- the experiment ----------------------------------------------------------------------------------


def run(a: PrefixArgs, runner: Runner, out: Path, console: Console | None = None) -> dict[str, Any]:
    console = console or Console()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    measured = _Measured(a, runner, out / "runs", console)
    if runner.mode == "sim":
        caps = search_all(a, measured)
        fixed = {w: fixed_rate(a, caps, w) for w in a.workloads}
        measured.run([(w, p, fixed[w]) for w in a.workloads for p in a.policies])
    else:  # live: fixed rates only; the capacity is read off them
        grid = [(w, p, q) for w in a.workloads for q in a.live_rates(w) for p in a.policies]
        measured.run(grid)
        caps = {}
        for w in a.workloads:
            outs = [o for (w2, _, _), o in measured.outputs.items() if w2 == w]
            for p, c in capacities(outs, a.slo_s).items():
                caps[(w, p)] = c
        fixed = {w: max(a.live_rates(w)) for w in a.workloads}
    wall = time.perf_counter() - t0
    at_fixed = {(w, p): measured.outputs[(w, p, fixed[w])] for w in a.workloads for p in a.policies}
    summary = {
        "workloads": {
            w: {
                p: {
                    "capacity_qps": float(caps[(w, p)].qps or 0.0),
                    "hit_rate": float(hit_rate(at_fixed[(w, p)]) or 0.0),
                }
                for p in a.policies
            }
            for w in a.workloads
        }
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    details = {
        "mode": runner.mode,
        "settings": asdict(a),
        "wall_s": wall,
        "fixed_rate": fixed,
        "cells": [
            {
                "workload": w,
                "policy": p,
                "capacity_qps": caps[(w, p)].qps,
                "bound": caps[(w, p)].bound,
                "fixed_rate": _latency(at_fixed[(w, p)]),
                "per_instance": per_instance(at_fixed[(w, p)]),
                "probes": [
                    {
                        "qps": q,
                        "ttft_p99_s": o.summary["ttft_s"]["p99"],
                        "failed": o.summary.get("failed", 0),
                        "hit_rate": hit_rate(o),
                        "file": str(o.path.relative_to(out)) if o.path.is_relative_to(out) else str(o.path),
                    }
                    for (w2, p2, q), o in sorted(measured.outputs.items(), key=lambda kv: kv[0][2])
                    if (w2, p2) == (w, p)
                ],
            }
            for w in a.workloads
            for p in a.policies
        ],
    }
    (out / "details.json").write_text(json.dumps(details, indent=2) + "\n")
    png = plot(a, measured, caps, at_fixed, out / "figure6_prefix.png")
    text = report(a, runner.mode, caps, fixed, at_fixed, wall, png)
    (out / "report.md").write_text(text)
    console.print(text)
    runs = len(measured.outputs)
    console.print(f"{runs} runs in {wall:.0f} s; {out}/summary.json, report.md, details.json, runs/")
    return summary


def _latency(o: RunOutput) -> dict[str, Any]:
    s = o.summary
    return {
        "qps": o.spec.qps,
        "ttft_p99_s": s["ttft_s"]["p99"],
        "e2e_p99_s": s["e2e_s"]["p99"],
        "ttft_mean_s": s["ttft_s"]["mean"],
        "e2e_mean_s": s["e2e_s"]["mean"],
        "completed": s.get("completed"),
        "failed": s.get("failed", 0),
        "hit_rate": hit_rate(o),
    }


# -- reporting ---------------------------------------------------------------------------------------


def ratios(a: PrefixArgs, caps: dict[Cell, Capacity], dataset: str) -> dict[str, float | None]:
    """Block's capacity over the best cache-blind policy's and over the best cache-aware baseline's."""
    block = caps.get((dataset, "block"))

    def best(group: tuple[str, ...]) -> float | None:
        qs = [caps[(dataset, p)].qps for p in a.policies if p in group]
        qs = [q for q in qs if q]
        return max(qs) if qs else None

    out: dict[str, float | None] = {}
    for name, group in (("over_cache_blind", CACHE_BLIND), ("over_cache_aware", CACHE_AWARE_BASELINES)):
        b = best(group)
        out[name] = None if block is None or not block.qps or b is None else block.qps / b
    return out


def report(
    a: PrefixArgs,
    mode: str,
    caps: dict[Cell, Capacity],
    fixed: dict[str, float],
    at_fixed: dict[Cell, RunOutput],
    wall_s: float,
    png: Path | None,
) -> str:
    unit = "sessions/s for sharegpt-chat, requests/s otherwise"
    lines = [
        f"# Prefix caching ({mode}): {a.instances} x {a.profile}, prefix caching on",
        "",
        f"{a.num_requests:,} requests (turns for sessions) per run, Poisson, seed {a.seed}, max_num_seqs "
        f"{a.max_num_seqs}, chunk {a.max_num_batched_tokens}, think time {a.think_time_s:g} s, step noise "
        f"{a.noise:g}. Capacity: highest rate ({unit}) with P99 TTFT <= {a.slo_s:g} s"
        + (
            f", searched (walk {a.step:.0%} steps, bisect to {a.tolerance:.0%}, at most {a.max_probes} "
            "probes, log-interpolated)"
            if mode == "sim"
            else ", read off the fixed rates"
        )
        + "; `>=`/`<`: every/no rate met it. Hit rate: share of prompt tokens served from the prefix "
        f"cache (vLLM's counters) at the fixed rate. Wall time {wall_s:.0f} s.",
        "",
    ]
    for w in a.workloads:
        r = ratios(a, caps, w)
        lines += [
            f"## {w}",
            "",
            f"Fixed rate {fixed[w]:g}"
            + (" (the best cache-blind policy's capacity)" if mode == "sim" else " (the highest live rate)")
            + f". Block / best cache-blind: {fmt(r['over_cache_blind'], 2)}; block / best cache-aware "
            f"baseline: {fmt(r['over_cache_aware'], 2)}.",
            "",
        ]
        rows = []
        for p in a.policies:
            o = at_fixed[(w, p)]
            s = o.summary
            inst = per_instance(o)
            spread = (
                f"{max(inst['prompt_token_share']) * len(inst['prompt_token_share']):.2f}" if inst else "-"
            )
            rows.append(
                [
                    p,
                    str(caps[(w, p)]),
                    fmt(hit_rate(o), 3),
                    fmt(s["ttft_s"]["p99"], 2),
                    fmt(s["e2e_s"]["p99"], 1),
                    spread,
                    f"{min(inst['hit_rate']):.2f}-{max(inst['hit_rate']):.2f}" if inst else "-",
                ]
            )
        head = [
            "policy",
            "capacity",
            "hit rate",
            "TTFT P99 s",
            "E2E P99 s",
            "busiest / mean prompt tokens",
            "instance hit rates",
        ]
        lines += [md_table(head, rows), ""]
    if png is not None:
        lines += [f"![Figure 6, prefix caching]({png.name})", ""]
    return "\n".join(lines)


def plot(
    a: PrefixArgs,
    measured: _Measured,
    caps: dict[Cell, Capacity],
    at_fixed: dict[Cell, RunOutput],
    png: Path,
) -> Path | None:
    """Figure 6 style: per workload, P99 TTFT against rate per policy, then capacity and hit rate bars."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    n = len(a.workloads)
    fig, axes = plt.subplots(n, 3, figsize=(15, 3.6 * n), squeeze=False)
    for row, w in enumerate(a.workloads):
        ax_lat, ax_cap, ax_hit = axes[row]
        for p in a.policies:
            pts = sorted(
                (q, o.summary["ttft_s"]["p99"])
                for (w2, p2, q), o in measured.outputs.items()
                if (w2, p2) == (w, p) and o.summary["ttft_s"]["p99"] is not None
            )
            if pts:
                ax_lat.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=p)
        ax_lat.axhline(a.slo_s, color="grey", linestyle="--", linewidth=1)
        ax_lat.set_yscale("log")
        ax_lat.set_title(f"{w}: P99 TTFT")
        ax_lat.set_xlabel("rate (sessions/s)" if w == "sharegpt-chat" else "rate (req/s)")
        ax_lat.set_ylabel("s")
        ax_lat.legend(fontsize=7)
        names = list(a.policies)
        ax_cap.bar(names, [caps[(w, p)].qps or 0.0 for p in names], color="tab:blue")
        ax_cap.set_title(f"{w}: capacity at P99 TTFT <= {a.slo_s:g} s")
        ax_hit.bar(names, [hit_rate(at_fixed[(w, p)]) or 0.0 for p in names], color="tab:green")
        ax_hit.set_ylim(0, 1)
        ax_hit.set_title(f"{w}: prefix-cache hit rate (tokens)")
        for ax in (ax_cap, ax_hit):
            ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png
