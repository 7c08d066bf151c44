"""`block experiment prediction`: the paper's Figure 5 - how accurate are the forecasts?

Sim mode: the block policy routes a ShareGPT workload on the simulated cluster (noisy steps, forecasts
from 20 ms snapshots plus pending routes, exactly as live). For every routed request the forecast on the
chosen instance is compared with what then happened to it in the simulation (later arrivals included,
which no forecast can know). On a 1% sample of decisions every instance is also replayed forward from its
exact state with the request (counterfactual.py): is the instance with the best forecast really the one
where the request would have finished first? With `fork`, each sampled decision is also rerun with the
whole cluster and the request pinned to each instance, later arrivals included - the truth the live
benchmark measures - and the pick of the exact mean-step replay (a forecast that knows the present
perfectly but not the future) is scored against it too, as a reference. With the `shadow-round-robin`
policy every instance is forecast but requests go round robin, as in the live benchmark: later arrivals
then land where they would have whatever the forecasts said.
Live mode runs the predictor's own accuracy benchmark on emulated engines (`block predictor accuracy`).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from block.experiments.analysis import fmt, md_table
from block.experiments.counterfactual import fork_on, replay_on
from block.policies import Candidates, Choice
from block.sidecar.accuracy import runner_up_gap
from block.sim.config import SimConfig
from block.sim.requests import SimRequests
from block.sim.simulator import Cluster, simulate
from block.sim.workload import WorkloadSpec, requests_for


@dataclass(frozen=True)
class PredictionArgs:
    qps: float = 28.0
    num_requests: int = 10_000
    instances: int = 12
    profile: str = "llama-2-7b-a30"
    policy: str = "block"
    sample_rate: float = 0.01
    dataset: str = "sharegpt"
    seed: int = 0
    noise: float = 0.03
    anticipate_arrivals: bool = False
    fork: bool = False


class _Collector:
    def __init__(self, sample_rate: float, seed: int, prompts: list[int], outputs: list[int]) -> None:
        self.rng = random.Random(seed)
        self.sample_rate = sample_rate
        self.prompts, self.outputs = prompts, outputs
        self.forecast: dict[int, tuple[float, float]] = {}  # request -> forecast (TTFT, E2E) where routed
        self.samples: list[dict[str, Any]] = []

    def __call__(self, cluster: Cluster, i: int, now: float, candidates: Candidates, choice: Choice) -> None:
        f = candidates.forecast_for(choice.instance)
        if f is not None:
            self.forecast[i] = (f.ttft_s, f.e2e_s)
        forecasts = candidates.forecasts
        if self.rng.random() >= self.sample_rate or forecasts is None or None in forecasts:
            return
        index = {v.id: k for k, v in enumerate(cluster.trackers)}
        rows = []
        for v, fv in zip(candidates.views, forecasts, strict=True):
            assert fv is not None
            r = index[v.id]
            ttft, e2e = replay_on(cluster, r, self.prompts[i], self.outputs[i], now)
            _, mean_e2e = replay_on(cluster, r, self.prompts[i], self.outputs[i], now, noisy=False)
            rows.append(
                {
                    "instance": v.id,
                    "replica": r,
                    "forecast_e2e": fv.e2e_s,
                    "replay_e2e": e2e,
                    "exact_replay_e2e": mean_e2e,  # the same replay with mean step times
                    "forecast_ttft": fv.ttft_s,
                    "replay_ttft": ttft,
                }
            )
        self.samples.append({"request": i, "chosen": choice.instance.id, "instances": rows})


def _errors(pred: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    rel = np.abs(pred - actual) / np.maximum(actual, 1e-9)
    signed = (pred - actual) / np.maximum(actual, 1e-9)
    return {
        "mean_abs_rel": float(rel.mean()),
        "p50_abs_rel": float(np.percentile(rel, 50)),
        "p90_abs_rel": float(np.percentile(rel, 90)),
        "mean_signed_rel": float(signed.mean()),
        "within_10pct": float((rel <= 0.10).mean()),
        "within_20pct": float((rel <= 0.20).mean()),
        "mean_abs_s": float(np.abs(pred - actual).mean()),
    }


def run_sim(a: PredictionArgs, out: Path, console: Console | None = None) -> dict[str, Any]:
    console = console or Console()
    reqs = requests_for(WorkloadSpec(a.dataset, a.num_requests, "poisson", 1.0, a.seed), a.qps)
    config = SimConfig(
        instances=a.instances,
        profile=a.profile,
        policy=a.policy,
        seed=a.seed,
        noise=a.noise,
        record_itl=False,
        prefix_caching=False,  # the paper's setting (vLLM 0.7.2)
        anticipate_arrivals=a.anticipate_arrivals,
    )
    collector = _Collector(a.sample_rate, a.seed, reqs.prompt_tokens.tolist(), reqs.output_tokens.tolist())
    with console.status("simulating with forecasts and counterfactual replays..."):
        outcome = simulate(config, reqs, collector)
    idx = sorted(collector.forecast)
    recs = outcome.records
    f_ttft = np.array([collector.forecast[i][0] for i in idx])
    f_e2e = np.array([collector.forecast[i][1] for i in idx])
    a_ttft = np.array([recs[i].ttft_s for i in idx])
    a_e2e = np.array([recs[i].e2e_s for i in idx])
    hits, exact_hits, regret = 0, 0, []
    decisions = len(collector.samples)
    for s in collector.samples:
        rows = s["instances"]
        best_f = min(rows, key=lambda r: r["forecast_e2e"])
        best_r = min(rows, key=lambda r: r["replay_e2e"])
        hits += best_f["instance"] == best_r["instance"]
        exact_hits += best_f["instance"] == min(rows, key=lambda r: r["exact_replay_e2e"])["instance"]
        regret.append(best_f["replay_e2e"] / best_r["replay_e2e"] - 1)
    forked = _judge_by_forks(config, reqs, collector.samples, recs, console) if a.fork else None
    sampled_pred = np.array([r["forecast_e2e"] for s in collector.samples for r in s["instances"]])
    sampled_true = np.array([r["replay_e2e"] for s in collector.samples for r in s["instances"]])
    result = {
        "mode": "sim",
        "args": a.__dict__,
        "routed": {"requests": len(idx), "ttft": _errors(f_ttft, a_ttft), "e2e": _errors(f_e2e, a_e2e)},
        "sampled": {
            "decisions": decisions,
            "best_instance_accuracy": hits / decisions if decisions else None,
            # Against replays with mean step times: noise alone cannot decide the fastest there.
            "best_instance_accuracy_exact": exact_hits / decisions if decisions else None,
            "mean_regret_e2e": float(np.mean(regret)) if regret else None,
            "e2e_vs_replay": _errors(sampled_pred, sampled_true) if sampled_pred.size else None,
            "fork": forked,
        },
        "sim": {k: v for k, v in outcome.stats.items() if k != "engine"},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "prediction.json").write_text(
        json.dumps({**result, "samples": collector.samples}, indent=1) + "\n"
    )
    _plot(f_ttft, a_ttft, f_e2e, a_e2e, out / "figure5.png")
    text = _report(result)
    (out / "report.md").write_text(text)
    console.print(text)
    return result


def _judge_by_forks(
    config: SimConfig,
    reqs: SimRequests,
    samples: list[dict[str, Any]],
    records: list[Any],
    console: Console,
) -> dict[str, Any] | None:
    """Best-instance accuracy and regret against whole-cluster reruns (adds `fork_e2e` to each row)."""
    from rich.progress import Progress

    if not samples:
        return None
    mismatch = 0.0
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("whole-cluster reruns", total=sum(len(s["instances"]) for s in samples))
        for s in samples:
            i = s["request"]
            for row in s["instances"]:
                row["fork_ttft"], row["fork_e2e"] = fork_on(config, reqs, i, row["replica"])
                if row["instance"] == s["chosen"]:  # the rerun of what happened must reproduce it
                    mismatch = max(mismatch, abs(row["fork_e2e"] - records[i].e2e_s))
                progress.advance(task)
    if mismatch > 1e-6:
        raise RuntimeError(f"a whole-cluster rerun did not reproduce the run ({mismatch:.3g} s apart)")
    hits = oracle = 0
    regret, gap = [], []
    for s in samples:
        rows = s["instances"]
        best = min(rows, key=lambda r: r["fork_e2e"])
        pick = min(rows, key=lambda r: r["forecast_e2e"])
        hits += pick["instance"] == best["instance"]
        oracle += min(rows, key=lambda r: r["exact_replay_e2e"])["instance"] == best["instance"]
        regret.append(pick["fork_e2e"] / best["fork_e2e"] - 1)
        gap.append(runner_up_gap([r["fork_e2e"] for r in rows]))
    n = len(samples)
    return {
        "best_instance_accuracy": hits / n,
        # A perfect forecast of the present (exact state, mean step times) that cannot know later arrivals.
        "present_oracle_accuracy": oracle / n,
        "mean_regret_e2e": float(np.mean(regret)),
        "runner_up_gap_median": float(np.median(gap)),
    }


def _report(r: dict[str, Any]) -> str:
    a = r["args"]
    rows = []
    for name in ("ttft", "e2e"):
        e = r["routed"][name]
        rows.append(
            [
                name.upper(),
                fmt(e["mean_abs_rel"] * 100, 1),
                fmt(e["p50_abs_rel"] * 100, 1),
                fmt(e["p90_abs_rel"] * 100, 1),
                fmt(e["mean_signed_rel"] * 100, 1),
                fmt(e["within_10pct"] * 100, 1),
                fmt(e["within_20pct"] * 100, 1),
            ]
        )
    s = r["sampled"]
    acc = "-" if s["best_instance_accuracy"] is None else f"{s['best_instance_accuracy']:.1%}"
    exact = s.get("best_instance_accuracy_exact")
    exact = "-" if exact is None else f"{exact:.1%}"
    regret = "-" if s["mean_regret_e2e"] is None else f"{s['mean_regret_e2e'] * 100:.2f}%"
    fork = s.get("fork")
    fork_text = (
        ""
        if not fork
        else f" Against whole-cluster reruns with the request on each instance (later arrivals included, "
        f"as live): forecast-best = fastest {fork['best_instance_accuracy']:.1%}; a perfect forecast of the "
        f"present that cannot know later arrivals: {fork['present_oracle_accuracy']:.1%}; mean regret "
        f"{fork['mean_regret_e2e'] * 100:.2f}%; the runner-up finished {fork['runner_up_gap_median']:.1%} "
        "after the fastest (median)."
    )
    return "\n".join(
        [
            f"# Figure 5 ({r['mode']}): forecast accuracy",
            "",
            f"{a['instances']} x {a['profile']}, {a['num_requests']:,} {a['dataset']} requests at "
            f"{a['qps']:g} req/s routed by `{a['policy']}`, step noise {a['noise']:g}.",
            "",
            "Error of the forecast on the chosen instance against what happened (% of the actual):",
            "",
            md_table(
                [
                    "metric",
                    "mean |err| %",
                    "P50 |err| %",
                    "P90 |err| %",
                    "mean signed %",
                    "<= 10 %",
                    "<= 20 %",
                ],
                rows,
            ),
            "",
            f"Best-instance accuracy on {s['decisions']} sampled decisions ({a['sample_rate']:.0%}): {acc} "
            "(forecast-best instance = fastest in a replay from the exact state, step noise included); "
            f"{exact} against the same replays with mean step times, where noise cannot decide near-ties; "
            f"mean E2E regret of the forecast-best over the replay-best: {regret}.{fork_text}",
            "",
            "Routed-request errors include what no forecast can know: requests that arrive later and share "
            "the batch, and step-time noise. The replays isolate staleness (20 ms snapshots) and noise.",
            "",
            "![Figure 5](figure5.png)",
            "",
        ]
    )


def _plot(f_ttft: np.ndarray, a_ttft: np.ndarray, f_e2e: np.ndarray, a_e2e: np.ndarray, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), constrained_layout=True)
    for ax, f, act, name in ((axes[0], f_e2e, a_e2e, "E2E"), (axes[1], f_ttft, a_ttft, "TTFT")):
        ax.scatter(act, f, s=3, alpha=0.3)
        hi = float(max(act.max(initial=0), f.max(initial=0)))
        ax.plot([0, hi], [0, hi], color="grey", lw=1, ls="--")
        ax.set(
            xlabel=f"actual {name} (s)", ylabel=f"forecast {name} (s)", title=f"{name}: forecast vs actual"
        )
        ax.grid(alpha=0.3)
    for f, act, name in ((f_e2e, a_e2e, "E2E"), (f_ttft, a_ttft, "TTFT")):
        rel = np.sort(np.abs(f - act) / np.maximum(act, 1e-9))
        axes[2].plot(rel * 100, np.linspace(0, 1, rel.size, endpoint=False), label=name)
    axes[2].set(
        xlabel="|forecast - actual| / actual (%)",
        ylabel="fraction of requests",
        xlim=(0, 100),
        title="Error CDF",
    )
    axes[2].grid(alpha=0.3)
    axes[2].legend()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def run_live(a: PredictionArgs, out: Path, console: Console | None = None) -> dict[str, Any]:
    """The predictor's live accuracy benchmark on emulated engines (scaled down)."""
    from block.sidecar.accuracy import run_accuracy

    console = console or Console()
    with console.status("live accuracy benchmark on emulated engines..."):
        report = run_accuracy(
            instances=a.instances,
            qps=a.qps,
            num_requests=a.num_requests,
            profile=a.profile,
            noise=a.noise,
            sample_rate=a.sample_rate,
            seed=a.seed,
            anticipate_arrivals=a.anticipate_arrivals,
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "prediction.json").write_text(json.dumps({"mode": "live", **report}, indent=2) + "\n")
    console.print(report)
    return report
