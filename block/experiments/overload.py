"""`block experiment overload`: goodput under overload, with and without SLO-aware admission.

First block's capacity without admission is measured on each workload (the highest rate with P99 TTFT
<= 3 s, block/sim/capacity.py); then every variant runs at 0.5, 1.0, 1.5 and 2.0 times it. Variants:
block with admission off / queue / reject, llumnix and round robin (no admission). Workloads: ShareGPT
with Poisson arrivals, and ShareGPT with bursty gamma arrivals (CV 3). Every request's target is a TTFT
of 3 s; 20% of the requests are high priority (`--priority-share 0.2`).

Per run: goodput (requests completed within the target per second of offered load: good requests over
the span of arrivals, so a cluster that falls behind is not credited with the time it takes to catch up),
`goodput_ratio` (over block+off's goodput at load 1.0 on the same workload), `high_on_target` (the share
of high-priority requests that met the target; rejected ones did not), the share rejected and the P99
TTFT of the admitted requests per class. Writes summary.json, report.md and goodput.png.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from block.bench.metrics import stats
from block.experiments.analysis import capacities, fmt, md_table
from block.experiments.plan import Runner, RunOutput, RunSpec
from block.experiments.progress import run_all
from block.sim.capacity import PAPER_SLO_S, Capacity
from block.sim.workload import WorkloadSpec
from block.workload.priorities import HIGH

VARIANTS = ["block+off", "block+queue", "block+reject", "llumnix", "round-robin"]
LOADS = [0.5, 1.0, 1.5, 2.0]
REFERENCE = "block+off"  # goodput_ratio's denominator: its goodput at load 1.0


@dataclass(frozen=True)
class Workload:
    name: str
    process: str
    burstiness: float
    guess_qps: float  # where the capacity search starts (block, no admission)


WORKLOADS = {
    "sharegpt": Workload("sharegpt", "poisson", 1.0, 40.0),
    "gamma-cv3": Workload("gamma-cv3", "gamma", 3.0, 30.0),
}


@dataclass(frozen=True)
class OverloadArgs:
    workloads: list[str] = field(default_factory=lambda: list(WORKLOADS))
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    loads: list[float] = field(default_factory=lambda: list(LOADS))
    num_requests: int = 3000
    instances: int = 12
    profile: str = "llama-2-7b-a30"
    max_num_seqs: int = 48
    max_num_batched_tokens: int = 512
    dataset: str = "sharegpt"
    max_model_len: int = 4096  # prompt + output at most (live: 1,024, so no answer holds a run for minutes)
    priority_share: float = 0.2
    target_ttft_s: float = PAPER_SLO_S
    seed: int = 0
    noise: float = 0.03
    # Capacity search: these multiples of the workload's guess first, then steps out while censored.
    search: list[float] = field(default_factory=lambda: [0.7, 0.85, 1.0, 1.15])
    guess_scale: float = 1.0  # live (4 engines): the guesses scaled to the smaller cluster


def split_variant(variant: str) -> tuple[str, str]:
    """'block+queue' -> ('block', 'queue'); 'llumnix' -> ('llumnix', 'off')."""
    policy, _, admission = variant.partition("+")
    return policy, admission or "off"


def spec(a: OverloadArgs, w: Workload, variant: str, qps: float, group: str) -> RunSpec:
    policy, admission = split_variant(variant)
    workload = WorkloadSpec(
        a.dataset,
        a.num_requests,
        w.process,
        w.burstiness,
        a.seed,
        max_model_len=a.max_model_len,
        priority_share=a.priority_share,
    )
    return RunSpec(
        policy,
        round(qps, 4),
        label=variant,
        group=group,
        instances=a.instances,
        profile=a.profile,
        max_num_seqs=a.max_num_seqs,
        max_num_batched_tokens=a.max_num_batched_tokens,
        workload=workload,
        noise=a.noise,
        seed=a.seed,
        slos={"ttft_p99": PAPER_SLO_S, "ttft": a.target_ttft_s},
        admission=admission,
    )


def find_capacity(
    a: OverloadArgs, w: Workload, runner: Runner, runs_dir: Path, console: Console
) -> tuple[Capacity, list[RunOutput]]:
    """Block's capacity without admission on workload `w`: a few rates around the guess, then steps
    out (at most 3) while every rate met the SLO or none did."""
    guess = w.guess_qps * a.guess_scale
    rates = [guess * m for m in a.search]
    group = f"{w.name}-capacity"
    outputs = run_all(runner, [spec(a, w, REFERENCE, q, group) for q in rates], runs_dir, console)
    for _ in range(3):
        cap = capacities(outputs, PAPER_SLO_S)[REFERENCE]
        if cap.bound == "":
            break
        step = rates[-1] - rates[-2]
        nxt = max(rates) + step if cap.bound == ">=" else min(rates) - step
        if nxt <= 0:
            break
        rates.append(nxt)
        outputs += run_all(runner, [spec(a, w, REFERENCE, nxt, group)], runs_dir, console)
    return capacities(outputs, PAPER_SLO_S)[REFERENCE], outputs


def measure(output: RunOutput, target_s: float) -> dict[str, Any]:
    """Goodput and per-class figures of one run, from its per-request records; `valid`: whether a
    live run kept real time (block/live_validity.py; None in the simulator)."""
    data = json.loads(output.path.read_text())
    requests = data["requests"]
    span = max((r["scheduled_s"] for r in requests), default=0.0) or 1e-9
    good = [
        r["status"] == 200 and r["error"] is None and (r["ttft_s"] or math.inf) <= target_s for r in requests
    ]
    out: dict[str, Any] = {
        "goodput": sum(good) / span,
        "valid": data["config"].get("validity", {}).get("valid"),
    }
    for name, keep in (("high", lambda p: p == HIGH), ("low", lambda p: p != HIGH)):
        idx = [i for i, r in enumerate(requests) if keep(r.get("priority", 0))]
        n = len(idx) or 1
        admitted = [requests[i]["ttft_s"] for i in idx if requests[i]["error"] is None]
        out[f"{name}_on_target"] = sum(good[i] for i in idx) / n
        out[f"{name}_rejected"] = sum(requests[i]["status"] == 429 for i in idx) / n
        out[f"{name}_ttft_p99_s"] = stats(t for t in admitted if t is not None)["p99"]
    return out


def run(a: OverloadArgs, runner: Runner, out: Path, console: Console | None = None) -> dict[str, Any]:
    console = console or Console()
    runs_dir = out / "runs"
    rows: list[dict[str, Any]] = []
    caps: dict[str, dict[str, Any]] = {}
    for name in a.workloads:
        w = WORKLOADS[name]
        cap, _ = find_capacity(a, w, runner, runs_dir, console)
        caps[name] = {"qps": cap.qps, "bound": cap.bound}
        if cap.qps is None:
            continue
        specs = [spec(a, w, v, load * cap.qps, name) for load in a.loads for v in a.variants]
        outputs = run_all(runner, specs, runs_dir, console)
        measured = [(o, measure(o, a.target_ttft_s)) for o in outputs]
        ref = next(
            (m["goodput"] for o, m in measured if o.spec.display == REFERENCE and _load(o, cap) == 1.0),
            None,
        )
        for o, m in measured:
            rows.append(
                {
                    "workload": name,
                    "variant": o.spec.display,
                    "load": _load(o, cap),
                    "goodput_ratio": m["goodput"] / ref if ref else None,
                    "high_on_target": m["high_on_target"],
                    "qps": o.spec.qps,
                    **m,
                }
            )
    summary = {"rows": rows, "capacity": caps, "mode": runner.mode, "args": _args_dict(a)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    png = plot(
        rows, out / "goodput.png", f"Goodput under overload ({runner.mode}, {a.instances} x {a.profile})"
    )
    text = report(a, rows, caps, runner.mode, png)
    (out / "report.md").write_text(text)
    console.print(text)
    return summary


def _load(o: RunOutput, cap: Capacity) -> float:
    assert cap.qps is not None
    return round(o.spec.qps / cap.qps, 2)


def _args_dict(a: OverloadArgs) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(a)


def plot(rows: list[dict[str, Any]], png: Path, title: str) -> Path | None:
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    fig, axes = plt.subplots(1, len(workloads), figsize=(5.5 * len(workloads), 4.2), squeeze=False)
    for ax, name in zip(axes[0], workloads, strict=True):
        mine = [r for r in rows if r["workload"] == name]
        for variant in dict.fromkeys(r["variant"] for r in mine):
            pts = sorted((r["load"], r["goodput"]) for r in mine if r["variant"] == variant)
            xs, ys = np.array(pts).T
            ax.plot(xs, ys, marker="o", label=variant)
        ax.set_title(name)
        ax.set_xlabel("offered load (x block's capacity without admission)")
        ax.set_ylabel("goodput (req/s within TTFT target)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def report(
    a: OverloadArgs, rows: list[dict[str, Any]], caps: dict[str, dict[str, Any]], mode: str, png: Path | None
) -> str:
    lines = [
        f"# Overload ({mode}): {a.instances} x {a.profile}, target TTFT {a.target_ttft_s:g} s",
        "",
        f"{a.num_requests:,} {a.dataset} requests per run, {a.priority_share:.0%} high priority; "
        f"load = offered rate / block's capacity without admission (P99 TTFT <= {PAPER_SLO_S:g} s): "
        + ", ".join(f"{k} {v['bound']}{fmt(v['qps'], 1)} req/s" for k, v in caps.items())
        + ". Goodput: requests within the target per second of arrivals; goodput ratio over "
        f"{REFERENCE} at load 1.0.",
        "",
    ]
    if any(v["bound"] for v in caps.values()):
        lines += [
            "**A capacity is censored** (`>=`: every rate tried met the SLO, `<`: none did): its loads "
            "are relative to a bound, not to the capacity. Give more requests per run.",
            "",
        ]
    table = [
        [
            r["workload"],
            f"{r['load']:g}",
            r["variant"],
            fmt(r["goodput"]),
            fmt(r["goodput_ratio"]),
            f"{r['high_on_target']:.1%}",
            f"{r['low_on_target']:.1%}",
            f"{r['high_rejected']:.1%}",
            f"{r['low_rejected']:.1%}",
            fmt(r["high_ttft_p99_s"]),
            fmt(r["low_ttft_p99_s"]),
        ]
        for r in rows
    ]
    headers = [
        "workload",
        "load",
        "variant",
        "goodput req/s",
        "goodput ratio",
        "high on target",
        "low on target",
        "high rejected",
        "low rejected",
        "high P99 TTFT s",
        "low P99 TTFT s",
    ]
    lines += [md_table(headers, table), ""]
    if png is not None:
        lines += [f"![goodput]({png.name})", ""]
    return "\n".join(lines)


LIVE_INSTANCES = 4
# On 4 engines 300-request runs never build a queue: every rate up to 1.6x the guess met the SLO and the
# capacity came out censored (sim, ShareGPT: >= 29.9 req/s); with 1,000 it is 18.9 req/s.
LIVE_REQUESTS = 1000


def live_args(a: OverloadArgs, instances: int, max_model_len: int) -> OverloadArgs:
    """The live scale: fewer engines, shorter answers (so more of them per second: the 1.4), capacity
    guesses scaled to both. `--mode sim --live-scale` runs the simulator at this scale too, for the
    comparison with a live run."""
    return replace(a, instances=instances, max_model_len=max_model_len, guess_scale=instances / 12 * 1.4)
