"""`block experiment lengths`: does planning with a quantile of the estimated length lower tail latency?

The block policy forecasts each instance by replaying its queue, which needs every request's output
length. The paper's "Block*" knows it (clients fix it with max_tokens + ignore_eos); "Block" estimates it.
This experiment runs the block policy on the paper's cluster (12 x Llama-2-7B on A30 by default, ShareGPT,
Poisson arrivals) near its capacity, once per way of planning lengths:

- `known`: the true length (Block*);
- `estimated`: the shipped length model's median prediction on each prompt (block.length);
- `quantile:Q`: the model's Q-quantile instead, i.e. planning pessimistically.

With several length models (`models`, NAME -> model file or "default"; `--length-models
tfidf=default,finetune=FILE`), each estimated setting runs once per model, named NAME-median, NAME-qQ:
the models compare on capacity, the measure that decides which one Block ships.

Replicas always generate the true length; only the router's plan changes. Prompts come from the length
model's held-out split by default, so the estimates are as good as on unseen traffic (on its training
prompts the model is markedly more accurate). The report gives P99 TTFT and E2E per rate, capacity at
P99 TTFT <= 3 s, and how good each plan was (error, bias, share of requests running past their plan).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from block.experiments.analysis import fmt, md_table
from block.experiments.plan import Runner, RunOutput, RunSpec
from block.experiments.progress import run_all
from block.sim.capacity import PAPER_SLO_S, Capacity, capacity
from block.sim.workload import SPLITS, WorkloadSpec, parse_lengths, requests_for

DEFAULT_LENGTHS = ("known", "estimated", "quantile:0.7", "quantile:0.9")


def variant_label(lengths: str) -> str:
    """How tables name a lengths setting: known, median, q0.9."""
    q = parse_lengths(lengths)
    if q is None:
        return "known"
    return "median" if q == 0.5 else f"q{q:g}"


@dataclass(frozen=True)
class LengthsArgs:
    lengths: list[str] = field(default_factory=lambda: list(DEFAULT_LENGTHS))
    # Around the simulated capacity of block with known lengths on this setup (about 37 req/s).
    rates: list[float] = field(default_factory=lambda: [32.0, 34.0, 36.0, 37.0, 38.0])
    num_requests: int = 10_000
    instances: int = 12
    profile: str = "llama-2-7b-a30"
    policy: str = "block"
    dataset: str = "sharegpt"
    split: str = "held-out"
    seeds: list[int] = field(default_factory=lambda: [0])
    noise: float = 0.03
    slo_ttft_p99: float = PAPER_SLO_S
    models: dict[str, str] = field(default_factory=dict)  # NAME -> length model file; {}: the shipped one

    def __post_init__(self) -> None:
        labels = [variant_label(x) for x in self.lengths]  # also validates each setting
        if len(set(labels)) != len(labels) or not labels:
            raise ValueError("give each lengths setting once")
        if any(not name or "-" in name for name in self.models):
            raise ValueError("length model names must be non-empty, without '-'")
        if not self.rates or not self.seeds:
            raise ValueError("give at least one rate and one seed")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}")


def workload(a: LengthsArgs, lengths: str, seed: int, model: str = "default") -> WorkloadSpec:
    return WorkloadSpec(
        a.dataset, a.num_requests, "poisson", 1.0, seed, lengths=lengths, split=a.split, length_model=model
    )


def variants(a: LengthsArgs) -> list[tuple[str, str, str]]:
    """(name in tables, lengths setting, length model file) of every variant: `known` once, each
    estimated setting once per length model."""
    out = []
    for lengths in a.lengths:
        label = variant_label(lengths)
        if label == "known" or not a.models:
            out.append((label, lengths, "default"))
        else:
            out += [(f"{name}-{label}", lengths, model) for name, model in a.models.items()]
    return out


def plan(a: LengthsArgs) -> list[RunSpec]:
    return [
        RunSpec(
            a.policy,
            qps,
            label=f"{a.policy}-{name}",
            group=f"seed{seed}" if len(a.seeds) > 1 else "",
            instances=a.instances,
            profile=a.profile,
            workload=workload(a, lengths, seed, model),
            noise=a.noise,
            seed=seed,
            slos={"ttft_p99": a.slo_ttft_p99},
        )
        for seed in a.seeds
        for name, lengths, model in variants(a)
        for qps in a.rates
    ]


def plan_quality(a: LengthsArgs) -> dict[str, dict[str, float]]:
    """Per estimated variant, how its plan compares with the true lengths (first seed's workload)."""
    out = {}
    for name, lengths, model in variants(a):
        reqs = requests_for(workload(a, lengths, a.seeds[0], model), a.rates[0])
        if reqs.planned_tokens is None:
            continue
        plan_, true = reqs.planned_tokens.astype(np.float64), reqs.output_tokens.astype(np.float64)
        out[name] = {
            "mae": float(np.abs(plan_ - true).mean()),
            "mean_planned": float(plan_.mean()),
            "mean_true": float(true.mean()),
            "share_past_plan": float((true > plan_).mean()),  # these run on past what the router planned
            "spearman": _spearman(plan_, true),
        }
    return out


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def _variant(o: RunOutput) -> str:
    return o.spec.label.removeprefix(f"{o.spec.policy}-")


def summarise(a: LengthsArgs, outputs: Sequence[RunOutput]) -> dict[str, Any]:
    """Per variant: capacity (mean over seeds) and per rate the seed-mean of P99 TTFT / E2E."""
    by: dict[str, dict[float, list[RunOutput]]] = {}
    for o in outputs:
        by.setdefault(_variant(o), {}).setdefault(o.spec.qps, []).append(o)
    data: dict[str, Any] = {}
    for variant, rates in by.items():
        caps: list[Capacity] = []
        for seed in a.seeds:
            pts = [
                (q, None if r.summary.get("failed", 0) else r.summary["ttft_s"]["p99"])
                for q, runs in rates.items()
                for r in runs
                if r.spec.seed == seed
            ]
            caps.append(capacity(pts, a.slo_ttft_p99))
        known = [c.qps for c in caps if c.qps is not None]
        bound = caps[0].bound if len({c.bound for c in caps}) == 1 else "~"
        per_rate = {}
        for q in sorted(rates):
            runs = rates[q]
            per_rate[q] = {
                "ttft_p99": statistics.fmean(r.summary["ttft_s"]["p99"] for r in runs),
                "e2e_p99": statistics.fmean(r.summary["e2e_s"]["p99"] for r in runs),
                "e2e_mean": statistics.fmean(r.summary["e2e_s"]["mean"] for r in runs),
                "ttft_p99_range": [
                    min(r.summary["ttft_s"]["p99"] for r in runs),
                    max(r.summary["ttft_s"]["p99"] for r in runs),
                ],
                "preemptions": statistics.fmean(r.extra.get("sim", {}).get("preemptions", 0) for r in runs),
            }
        data[variant] = {
            "capacity_qps": statistics.fmean(known) if known else None,
            "capacity_bound": bound,
            "capacity_per_seed": [c.qps for c in caps],
            "rates": per_rate,
        }
    return data


def report(a: LengthsArgs, data: dict[str, Any], quality: dict[str, dict[str, float]], mode: str) -> str:
    seeds = f"seed {a.seeds[0]}" if len(a.seeds) == 1 else f"seeds {', '.join(map(str, a.seeds))} (means)"
    lines = [
        f"# Planning with estimated lengths ({mode}): {a.policy} on {a.instances} x {a.profile}",
        "",
        f"{a.num_requests:,} {a.dataset} requests ({a.split} prompts of the length model's split), Poisson, "
        f"rates {', '.join(f'{r:g}' for r in a.rates)} req/s; step noise {a.noise:g}; {seeds}. Replicas "
        "generate the true lengths; the router plans with: known = the true length (Block*), median = "
        "the length model's point estimate (Block), qQ = its Q-quantile.",
        "",
        f"## Capacity (highest rate with P99 TTFT <= {a.slo_ttft_p99:g} s)",
        "",
    ]
    rows = []
    ref = data.get("known", {}).get("capacity_qps")
    for variant, d in data.items():
        cap = d["capacity_qps"]
        text = (
            "-"
            if cap is None
            else f"{'' if d['capacity_bound'] in ('', '~') else d['capacity_bound']}{cap:.1f}"
        )
        rel = "-" if cap is None or not ref else f"{(cap - ref) / ref * 100:+.1f}%"
        rows.append([variant, text, rel])
    lines += [md_table(["lengths", "capacity QPS", "vs known"], rows), ""]
    lines += ["## Tail latency per rate", ""]
    rows = []
    for q in a.rates:
        for variant, d in data.items():
            r = d["rates"].get(q)
            if r is None:
                continue
            rows.append(
                [
                    f"{q:g}",
                    variant,
                    fmt(r["ttft_p99"], 3),
                    fmt(r["e2e_p99"]),
                    fmt(r["e2e_mean"]),
                    f"{r['preemptions']:.0f}",
                ]
            )
    lines += [
        md_table(["QPS", "lengths", "TTFT P99 s", "E2E P99 s", "E2E mean s", "preemptions"], rows),
        "",
    ]
    if quality:
        lines += ["## How good the plans were", ""]
        rows = [
            [
                v,
                f"{d['mae']:.0f}",
                f"{d['mean_planned']:.0f}",
                f"{d['mean_true']:.0f}",
                f"{d['share_past_plan'] * 100:.0f}%",
                f"{d['spearman']:.2f}",
            ]
            for v, d in quality.items()
        ]
        lines += [
            md_table(
                ["lengths", "MAE tokens", "mean planned", "mean true", "run past plan", "Spearman"], rows
            ),
            "",
        ]
    return "\n".join(lines)


def run(a: LengthsArgs, runner: Runner, out: Path, console: Console | None = None) -> dict[str, Any]:
    if runner.mode != "sim":
        raise ValueError("the lengths experiment runs in the simulator only (--mode sim)")
    console = console or Console()
    outputs = run_all(runner, plan(a), out / "runs", console)
    data = summarise(a, outputs)
    quality = plan_quality(a)
    text = report(a, data, quality, runner.mode)
    (out / "report.md").write_text(text + "\n")
    doc = {"args": asdict(a), "variants": data, "plan_quality": quality}
    (out / "lengths.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    console.print(text)
    return doc
