"""`block experiment provision`: the paper's Figure 8, auto-provisioning in the simulator.

Setting (the paper's): 12 A30 instances available, 6 running at the start, QPS 24, E2E SLO 70 s, 10,000
ShareGPT requests, Llama-2-7B A30 profile, Block routing. Compared: a static fleet of 10 instances,
reactive provisioning (a finished request missed the SLO) and preemptive provisioning (a routing forecast
says the new request will miss it). A started instance serves after `startup_delay_s` (30 s by default:
container start plus loading a 7B model; the paper does not state it, so it is a flag).

Writes results.json, report.md and provision.png (instances and latency over time) into --out.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from block.provision.controller import PREEMPTIVE, REACTIVE, ProvisionSettings

if TYPE_CHECKING:
    from block.provision.sim import ProvisionedOutcome, SimProvisionPlan

# Scale-up decision to serving in the simulator (the same default as block.provision.sim); kept here so
# that registering the command imports nothing heavy (`block --help` stays fast).
DEFAULT_STARTUP_DELAY_S = 30.0

STATIC = "static"


@dataclass(frozen=True)
class ProvisionArgs:
    num_requests: int = 10_000
    qps: float = 24.0
    slo_s: float = 70.0
    initial_instances: int = 6
    max_instances: int = 12
    static_instances: int = 10
    startup_delay_s: float = DEFAULT_STARTUP_DELAY_S
    cooldown_s: float = 30.0
    scale_down: bool = True
    scale_down_hold_s: float = 120.0
    policy: str = "block"
    profile: str = "llama-2-7b-a30"
    dataset: str = "sharegpt"
    seed: int = 0
    variants: tuple[str, ...] = (STATIC, REACTIVE, PREEMPTIVE)


def plan_for(variant: str, a: ProvisionArgs) -> SimProvisionPlan:
    from block.provision.sim import SimProvisionPlan

    if variant == STATIC:
        return SimProvisionPlan(a.static_instances, a.static_instances, None, a.startup_delay_s)
    settings = ProvisionSettings(
        variant,
        a.slo_s,
        min_instances=a.initial_instances,
        max_instances=a.max_instances,
        cooldown_s=a.cooldown_s,
        scale_down=a.scale_down,
        scale_down_hold_s=a.scale_down_hold_s,
    )
    return SimProvisionPlan(a.initial_instances, a.max_instances, settings, a.startup_delay_s)


def summarize(variant: str, run: ProvisionedOutcome, slo_s: float, wall_s: float) -> dict[str, Any]:
    import numpy as np

    recs = run.outcome.records
    done = [r for r in recs if r.e2e_s is not None]
    e2e = np.array([r.e2e_s for r in done])
    ttft = np.array([r.ttft_s for r in done])
    return {
        "variant": variant,
        "requests": len(recs),
        "completed": len(done),
        "p50_e2e_s": float(np.percentile(e2e, 50)),
        "p99_e2e_s": float(np.percentile(e2e, 99)),
        "p99_ttft_s": float(np.percentile(ttft, 99)),
        "over_slo": int((e2e > slo_s).sum()),
        "instance_seconds": run.instance_seconds,
        "duration_s": run.outcome.duration_s,
        "peak_instances": max(a + s + d for _, a, s, d in run.timeline),
        "final_active": run.timeline[-1][1],
        "scale_ups": sum(d["action"] == "scale_up" for d in run.decisions),
        "scale_downs": sum(d["action"] == "scale_down" for d in run.decisions),
        "first_scale_up_s": next((d["time"] for d in run.decisions if d["action"] == "scale_up"), None),
        "wall_s": wall_s,
    }


def _timed_run(job: tuple[Any, Any, SimProvisionPlan]) -> tuple[ProvisionedOutcome, float]:
    from block.provision.sim import simulate_provisioned

    t0 = time.perf_counter()
    run = simulate_provisioned(*job)
    return run, time.perf_counter() - t0


def run_sim(a: ProvisionArgs, out: Path, echo: Any = print, workers: int = 1) -> dict[str, Any]:
    from block.sim.config import SimConfig
    from block.sim.workload import WorkloadSpec, requests_for

    out.mkdir(parents=True, exist_ok=True)
    spec = WorkloadSpec(dataset=a.dataset, num_requests=a.num_requests, seed=a.seed)
    requests = requests_for(spec, a.qps)
    config = SimConfig(
        instances=a.max_instances, profile=a.profile, policy=a.policy, seed=a.seed, record_itl=False
    )
    jobs = [(config, requests, plan_for(v, a)) for v in a.variants]
    if workers > 1 and len(jobs) > 1:  # variants are independent: one process each
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(workers, len(jobs))) as pool:
            timed = list(pool.map(_timed_run, jobs))
    else:
        timed = [_timed_run(job) for job in jobs]
    summaries, runs = [], {}
    for variant, (run, wall_s) in zip(a.variants, timed, strict=True):
        summary = summarize(variant, run, a.slo_s, wall_s)
        echo(
            f"{variant:>10}: P99 E2E {summary['p99_e2e_s']:.1f} s, {summary['over_slo']} over the SLO, "
            f"{summary['instance_seconds']:.0f} instance-s ({summary['wall_s']:.0f} s wall)"
        )
        summaries.append(summary)
        runs[variant] = run
    result = {
        "experiment": "provision",
        "mode": "sim",
        "args": {**asdict(a), "variants": list(a.variants)},
        "summaries": summaries,
        "runs": {
            v: {
                "decisions": r.decisions,
                "timeline": r.timeline,
                "requests": [
                    [rec.scheduled_s, rec.e2e_s] for rec in r.outcome.records if rec.e2e_s is not None
                ],
            }
            for v, r in runs.items()
        },
    }
    (out / "results.json").write_text(json.dumps(result))
    plot(result, out / "provision.png")
    (out / "report.md").write_text(report(result))
    return result


# -- outputs ---------------------------------------------------------------------------------------


def _steps(timeline: list[list[float]], end: float) -> tuple[list[float], list[int]]:
    """Serving instances (active + starting) as a step function of time."""
    ts, ns = [], []
    for t, active, starting, _draining in timeline:
        ts.append(t)
        ns.append(active + starting)
    ts.append(end)
    ns.append(ns[-1])
    return ts, ns


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slo = result["args"]["slo_s"]
    fig, (ax_n, ax_l) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for summary in result["summaries"]:
        v = summary["variant"]
        run = result["runs"][v]
        ts, ns = _steps(run["timeline"], summary["duration_s"])
        ax_n.step(ts, ns, where="post", label=v)
        # Active only (dashed): the gap to the solid line is instances still booting.
        actives = [row[1] for row in run["timeline"]] + [run["timeline"][-1][1]]
        ax_n.step(ts, actives, where="post", linestyle=":", color=ax_n.lines[-1].get_color(), alpha=0.6)
        req = np.array(run["requests"])
        order = np.argsort(req[:, 0])
        arrival, e2e = req[order, 0], req[order, 1]
        window = max(1, len(e2e) // 100)  # rolling P99 over about 1% of the requests
        starts = np.arange(0, len(e2e) - window + 1, max(1, window // 4))
        p99 = [np.percentile(e2e[s : s + window], 99) for s in starts]
        ax_l.plot(arrival[starts + window // 2], p99, label=v, color=ax_n.lines[-1].get_color())
    ax_l.axhline(slo, color="red", linestyle="--", linewidth=1, label=f"SLO {slo:g} s")
    ax_n.set_ylabel("instances (solid: held, dotted: serving)")
    ax_n.legend(loc="lower right")
    ax_n.grid(alpha=0.3)
    ax_l.set_ylabel("rolling P99 E2E (s), by arrival")
    ax_l.set_xlabel("time (s)")
    ax_l.legend(loc="upper left")
    ax_l.grid(alpha=0.3)
    a = result["args"]
    fig.suptitle(
        f"Auto-provisioning (sim): {a['num_requests']} {a['dataset']} requests, QPS {a['qps']:g}, "
        f"{a['initial_instances']} of {a['max_instances']} instances at start, "
        f"start-up {a['startup_delay_s']:g} s"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(result: dict[str, Any]) -> str:
    a = result["args"]
    lines = [
        "# Auto-provisioning (paper Figure 8 setting), simulated",
        "",
        f"- {a['num_requests']:,} {a['dataset']} requests, Poisson QPS {a['qps']:g}, profile {a['profile']}, "
        f"policy {a['policy']}, seed {a['seed']}",
        f"- E2E SLO {a['slo_s']:g} s; provisioned runs start with {a['initial_instances']} of "
        f"{a['max_instances']} instances; static baseline {a['static_instances']} instances",
        f"- a started instance serves after {a['startup_delay_s']:g} s (assumed; held and counted from the "
        f"decision); cooldown {a['cooldown_s']:g} s; scale-down "
        + (f"after {a['scale_down_hold_s']:g} s under half the SLO" if a["scale_down"] else "off"),
        "",
        "| variant | P99 E2E (s) | P50 E2E (s) | P99 TTFT (s) | over SLO | instance-s | peak | "
        "ups | downs | first up (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in result["summaries"]:
        first = "-" if s["first_scale_up_s"] is None else f"{s['first_scale_up_s']:.1f}"
        lines.append(
            f"| {s['variant']} | {s['p99_e2e_s']:.1f} | {s['p50_e2e_s']:.1f} | {s['p99_ttft_s']:.1f} | "
            f"{s['over_slo']} | {s['instance_seconds']:.0f} | {s['peak_instances']} | {s['scale_ups']} | "
            f"{s['scale_downs']} | {first} |"
        )
    lines += ["", "![instances and latency over time](provision.png)", "", "## Decisions", ""]
    for v, run in result["runs"].items():
        if not run["decisions"]:
            continue
        lines.append(
            f"**{v}**: "
            + "; ".join(
                f"{d['time']:.1f} s {d['action']} ({d['reason']}) "
                f"{d['instances_before']}->{d['instances_after']}"
                for d in run["decisions"]
            )
        )
        lines.append("")
    return "\n".join(lines) + "\n"


# -- command line ----------------------------------------------------------------------------------


def register(exp: typer.Typer) -> None:
    """Adds `provision` to the `block experiment` group: `register(exp)` in block/experiments/cli.py."""

    @exp.command("provision")
    def provision_cmd(
        mode: str = typer.Option("sim", help="sim: the cluster simulator (live: not yet)."),
        out: Path = typer.Option(Path("results/experiments/provision"), help="Output directory."),
        num_requests: int = typer.Option(10_000, min=1, help="Requests per run."),
        qps: float = typer.Option(24.0, min=0.001),
        slo_e2e: float = typer.Option(70.0, "--slo-e2e", help="E2E SLO (s)."),
        initial_instances: int = typer.Option(6, min=1, help="Instances at the start (provisioned runs)."),
        max_instances: int = typer.Option(12, min=1),
        static_instances: int = typer.Option(10, min=1, help="Size of the static baseline."),
        startup_delay_s: float = typer.Option(DEFAULT_STARTUP_DELAY_S, min=0.0, help="Scale-up to serving."),
        cooldown_s: float = typer.Option(30.0, min=0.0),
        scale_down_hold_s: float = typer.Option(120.0, min=0.0),
        no_scale_down: bool = typer.Option(False, "--no-scale-down", help="Only ever add (as the paper)."),
        variants: str = typer.Option("static,reactive,preemptive", help="Comma-separated."),
        policy: str = typer.Option("block"),
        seed: int = typer.Option(0),
        workers: int = typer.Option(3, min=1, help="Variants simulated in parallel processes."),
    ) -> None:
        """Figure 8: static 10 instances vs reactive vs preemptive provisioning (6 of 12 at start, QPS 24)."""
        if mode != "sim":
            raise typer.BadParameter("only --mode sim is implemented so far", param_hint="--mode")
        names = tuple(v.strip() for v in variants.split(",") if v.strip())
        bad = [v for v in names if v not in (STATIC, REACTIVE, PREEMPTIVE)]
        if bad or not names:
            raise typer.BadParameter(f"variants are static, reactive, preemptive (got {variants!r})")
        args = ProvisionArgs(
            num_requests=num_requests,
            qps=qps,
            slo_s=slo_e2e,
            initial_instances=initial_instances,
            max_instances=max_instances,
            static_instances=static_instances,
            startup_delay_s=startup_delay_s,
            cooldown_s=cooldown_s,
            scale_down=not no_scale_down,
            scale_down_hold_s=scale_down_hold_s,
            policy=policy,
            seed=seed,
            variants=names,
        )
        try:
            run_sim(args, out, echo=typer.echo, workers=workers)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
        typer.echo(f"wrote {out}/results.json, report.md, provision.png")
