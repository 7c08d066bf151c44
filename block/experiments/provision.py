"""`block experiment provision`: the paper's Figure 8, auto-provisioning, simulated or live.

Setting (the paper's, `--mode sim`): 12 A30 instances available, 6 running at the start, QPS 24, E2E SLO
70 s, 10,000 ShareGPT requests, Llama-2-7B A30 profile, Block routing. Compared: a static fleet of 10
instances, reactive provisioning (a finished request missed the SLO) and preemptive provisioning (a routing
forecast says the new request will miss it). A started instance serves after `startup_delay_s` (30 s by
default: container start plus loading a 7B model; the paper does not state it, so it is a flag).

`--mode live` (provision_live.py) runs a scaled-down version of the same comparison with a real router
process that starts emulated engines itself (provider local-emulator): by default A30 engines batching at
most 8 sequences, 2 of 4 instances at the start, QPS 5, static 3, 360 requests of at most 512 tokens, SLO
20 s, so that it ends in a few minutes on a small machine. `--mode sim` with the same flags simulates that
setting.

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
from block.sim.cli import EXECUTOR_HELP, parse_executor
from block.sim.executor import ExecutorSpec

if TYPE_CHECKING:
    from block.provision.sim import ProvisionedOutcome, SimProvisionPlan

# Scale-up decision to serving in the simulator (the same default as block.provision.sim); kept here so
# that registering the command imports nothing heavy (`block --help` stays fast).
DEFAULT_STARTUP_DELAY_S = 30.0

STATIC = "static"

# The live comparison, scaled down to finish in a few minutes on a small machine: a third of the paper's
# instances and rate (so the same load per instance), shorter requests and a correspondingly lower SLO.
# Engines batch at most 8 sequences, so that a few requests per second overload one (and the tokens the
# router and client stream stay few), and requests stay short, so that the SLO is missed by queueing
# rather than by the longest outputs alone.
LIVE_DEFAULTS: dict[str, Any] = {
    "num_requests": 360,
    "qps": 5.0,
    "slo_s": 20.0,
    "initial_instances": 2,
    "max_instances": 4,
    "static_instances": 3,
    "cooldown_s": 10.0,
    "scale_down_hold_s": 30.0,
    "max_model_len": 512,
    "max_num_seqs": 8,
}


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
    scale_up_fraction: float = 1.0  # preemptive: forecasts over this share of the SLO scale up
    forecast_horizon: float = 2.0  # x SLO: forecasts stop there (0: run each to the end)
    max_model_len: int = 4096  # the workload's longest request (prompt + output)
    max_num_seqs: int | None = None  # engine batch limit (None: the profile's)
    anticipate_arrivals: bool = False  # forecasts add the arrivals expected at the fleet's rate
    start_timeout_s: float = 60.0  # live: an engine not healthy by then is released
    request_timeout_s: float = 900.0  # live: the bench client gives up on a request after this
    policy: str = "block"
    profile: str = "llama-2-7b-a30"
    dataset: str = "sharegpt"
    seed: int = 0
    variants: tuple[str, ...] = (STATIC, REACTIVE, PREEMPTIVE)


def plan_for(variant: str, a: ProvisionArgs) -> SimProvisionPlan:
    from block.provision.sim import SimProvisionPlan

    horizon = a.forecast_horizon * a.slo_s if a.forecast_horizon > 0 else None
    if variant == STATIC:
        return SimProvisionPlan(a.static_instances, a.static_instances, None, a.startup_delay_s, horizon)
    settings = ProvisionSettings(
        variant,
        a.slo_s,
        min_instances=a.initial_instances,
        max_instances=a.max_instances,
        cooldown_s=a.cooldown_s,
        scale_down=a.scale_down,
        scale_down_hold_s=a.scale_down_hold_s,
        scale_up_fraction=a.scale_up_fraction,
    )
    return SimProvisionPlan(a.initial_instances, a.max_instances, settings, a.startup_delay_s, horizon)


def summarize_records(
    variant: str,
    records: list[Any],
    slo_s: float,
    instance_seconds: float,
    duration_s: float,
    timeline: list[Any],
    decisions: list[dict[str, Any]],
) -> dict[str, Any]:
    """The same summary for a simulated and a live run (records: block.bench.record.RequestRecord)."""
    import numpy as np

    done = [r for r in records if r.e2e_s is not None]
    e2e = np.array([r.e2e_s for r in done]) if done else np.zeros(1)
    ttft = np.array([r.ttft_s for r in done if r.ttft_s is not None]) if done else np.zeros(1)
    return {
        "variant": variant,
        "requests": len(records),
        "completed": len(done),
        "p50_e2e_s": float(np.percentile(e2e, 50)),
        "p99_e2e_s": float(np.percentile(e2e, 99)),
        "p99_ttft_s": float(np.percentile(ttft, 99)),
        "over_slo": int((e2e > slo_s).sum()) if done else 0,
        "instance_seconds": instance_seconds,
        "duration_s": duration_s,
        "peak_instances": max((a + s + d for _, a, s, d in timeline), default=0),
        "final_active": timeline[-1][1] if timeline else 0,
        "scale_ups": sum(d["action"] == "scale_up" for d in decisions),
        "scale_downs": sum(d["action"] == "scale_down" for d in decisions),
        "first_scale_up_s": next(
            (d["time"] for d in decisions if d["action"] == "scale_up" and d["reason"] != "below_min"), None
        ),
    }


def summarize(variant: str, run: ProvisionedOutcome, slo_s: float, wall_s: float) -> dict[str, Any]:
    out = summarize_records(
        variant,
        run.outcome.records,
        slo_s,
        run.instance_seconds,
        run.outcome.duration_s,
        run.timeline,
        run.decisions,
    )
    return {
        **out,
        "wall_s": wall_s,
        "cpu_s": run.stats.get("cpu_s"),
        "forecasts": run.stats.get("forecasts"),
        "forecast_cpu_s": run.stats.get("forecast_cpu_s"),
        "capped_forecasts": run.stats.get("capped_forecasts"),
    }


def _timed_run(job: tuple[Any, Any, SimProvisionPlan]) -> tuple[ProvisionedOutcome, float]:
    from block.provision.sim import simulate_provisioned

    t0 = time.perf_counter()
    run = simulate_provisioned(*job)
    return run, time.perf_counter() - t0


def run_sim(
    a: ProvisionArgs,
    out: Path,
    echo: Any = print,
    workers: int = 1,
    executor: ExecutorSpec = ExecutorSpec(),
) -> dict[str, Any]:
    """Every variant on `executor` (`workers` local processes: variants are independent)."""
    from block.sim.config import SimConfig
    from block.sim.executor import run_each
    from block.sim.workload import WorkloadSpec, requests_for

    out.mkdir(parents=True, exist_ok=True)
    spec = WorkloadSpec(
        dataset=a.dataset, num_requests=a.num_requests, seed=a.seed, max_model_len=a.max_model_len
    )
    requests = requests_for(spec, a.qps)
    config = SimConfig(
        instances=a.max_instances,
        profile=a.profile,
        policy=a.policy,
        seed=a.seed,
        record_itl=False,
        prefix_caching=False,  # the paper's setting (vLLM 0.7.2)
        max_num_seqs=a.max_num_seqs,
        anticipate_arrivals=a.anticipate_arrivals,
    )
    jobs = [(config, requests, plan_for(v, a)) for v in a.variants]
    with executor.open(min(workers, len(jobs))) as pool:
        finished = dict(run_each(pool, _timed_run, ((job,) for job in jobs)))
    timed = [finished[i] for i in range(len(jobs))]
    summaries, runs = [], {}
    for variant, (run, wall_s) in zip(a.variants, timed, strict=True):
        summary = summarize(variant, run, a.slo_s, wall_s)
        echo(
            f"{variant:>10}: P99 E2E {summary['p99_e2e_s']:.1f} s, {summary['over_slo']} over the SLO, "
            f"{summary['instance_seconds']:.0f} instance-s ({summary['cpu_s']:.0f} s CPU, "
            f"{summary['wall_s']:.0f} s wall, {summary['capped_forecasts']} of {summary['forecasts']} "
            "forecasts capped)"
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
                # a rolling P99 rather than every request: the file stays small at 10,000 requests
                "latency_p99": latency_series(
                    [[rec.scheduled_s, rec.e2e_s] for rec in r.outcome.records if rec.e2e_s is not None]
                ),
            }
            for v, r in runs.items()
        },
    }
    (out / "results.json").write_text(json.dumps(result))
    plot(result, out / "provision.png")
    (out / "report.md").write_text(report(result))
    return result


def run_live_experiment(
    a: ProvisionArgs, out: Path, echo: Any = print, log_dir: Path | None = None
) -> dict[str, Any]:
    """`log_dir`: the router's and engines' logs (default: a new temporary folder, named in the output)."""
    from block.experiments.provision_live import instance_seconds, run_live

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    runs = run_live(a, log_dir=log_dir, echo=echo)
    summaries = []
    for run in runs:
        first = min((r.sent_s for r in run.records if r.sent_s is not None), default=0.0)
        summary = summarize_records(
            run.variant,
            run.records,
            a.slo_s,
            instance_seconds(run.held, first, run.duration_s),
            run.duration_s,
            run.timeline,
            run.decisions,
        )
        summary.update(
            failed=sum(1 for r in run.records if not r.ok),
            start_timeouts=run.start_timeouts,
            leftover_engines=run.leftover_engines,
            machine_cpu_busy=run.machine_cpu_busy,
            load_avg_1m=run.load_avg_1m,
            engine_lag_resets=run.engine_lag_resets,
            router_fallbacks=run.router_fallbacks,
            router_log=run.router_log,
        )
        echo(
            f"{run.variant:>10}: P99 E2E {summary['p99_e2e_s']:.1f} s, {summary['over_slo']} over the SLO, "
            f"{summary['instance_seconds']:.0f} instance-s, {summary['failed']} failed"
        )
        summaries.append(summary)
    result = {
        "experiment": "provision",
        "mode": "live",
        "args": {**asdict(a), "variants": list(a.variants)},
        "wall_s": time.perf_counter() - t0,
        "summaries": summaries,
        "runs": {
            run.variant: {
                "decisions": run.decisions,
                "timeline": run.timeline,
                "requests": [[r.scheduled_s, r.e2e_s] for r in run.records if r.e2e_s is not None],
                "latency_p99": latency_series(
                    [[r.scheduled_s, r.e2e_s] for r in run.records if r.e2e_s is not None]
                ),
            }
            for run in runs
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


def latency_series(requests: list[list[float]]) -> list[list[float]]:
    """Rolling P99 E2E over about 1% of the requests (at least 20), by arrival: [[mid-window arrival, p99],
    ...]."""
    import numpy as np

    if not requests:
        return []
    req = np.array(requests, dtype=float)
    order = np.argsort(req[:, 0], kind="stable")
    arrival, e2e = req[order, 0], req[order, 1]
    window = max(min(20, len(e2e)), len(e2e) // 100)
    starts = np.arange(0, len(e2e) - window + 1, max(1, window // 4))
    return [[float(arrival[s + window // 2]), float(np.percentile(e2e[s : s + window], 99))] for s in starts]


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

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
        series = run.get("latency_p99") or latency_series(run["requests"])
        if series:
            ts_l, p99 = zip(*series, strict=True)
            ax_l.plot(ts_l, p99, label=v, color=ax_n.lines[-1].get_color())
    ax_l.axhline(slo, color="red", linestyle="--", linewidth=1, label=f"SLO {slo:g} s")
    from matplotlib.ticker import MaxNLocator

    ax_n.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_n.set_ylabel("instances (solid: held, dotted: serving)")
    ax_n.legend(loc="lower right")
    ax_n.grid(alpha=0.3)
    ax_l.set_ylabel("rolling P99 E2E (s), by arrival")
    ax_l.set_xlabel("time (s)")
    ax_l.legend(loc="upper left")
    ax_l.grid(alpha=0.3)
    a = result["args"]
    boot = f"start-up {a['startup_delay_s']:g} s" if result["mode"] == "sim" else "real engine boot"
    fig.suptitle(
        f"Auto-provisioning ({result['mode']}): {a['num_requests']} {a['dataset']} requests, "
        f"QPS {a['qps']:g}, {a['initial_instances']} of {a['max_instances']} instances at start, {boot}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(result: dict[str, Any]) -> str:
    a = result["args"]
    live = result["mode"] == "live"
    boot = (
        "a started instance is a `block engine` process the router starts (its real boot time); "
        f"start timeout {a['start_timeout_s']:g} s"
        if live
        else f"a started instance serves after {a['startup_delay_s']:g} s (assumed; held and counted from "
        f"the decision); forecasts stop at {a['forecast_horizon']:g} x the SLO"
    )
    lines = [
        "# Auto-provisioning (paper Figure 8 setting), " + ("live, scaled down" if live else "simulated"),
        "",
        f"- {a['num_requests']:,} {a['dataset']} requests, Poisson QPS {a['qps']:g}, profile {a['profile']}, "
        f"policy {a['policy']}, seed {a['seed']}",
        f"- E2E SLO {a['slo_s']:g} s; provisioned runs start with {a['initial_instances']} of "
        f"{a['max_instances']} instances; static baseline {a['static_instances']} instances",
        f"- {boot}; requests of at most {a['max_model_len']} tokens; cooldown {a['cooldown_s']:g} s; "
        "scale-down "
        + (f"after {a['scale_down_hold_s']:g} s under half the SLO" if a["scale_down"] else "off")
        + ("; forecasts anticipate arrivals" if a.get("anticipate_arrivals") else "")
        + (
            f"; preemptive scales up at {a['scale_up_fraction']:g} x the SLO"
            if a.get("scale_up_fraction", 1.0) != 1.0
            else ""
        ),
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
    if not live and all(s.get("cpu_s") is not None for s in result["summaries"]):
        lines += [
            "",
            "Simulation cost (CPU s; forecasts, of which stopped at the horizon): "
            + "; ".join(
                f"{s['variant']} {s['cpu_s']:.0f} s ({s['forecasts']:,}, {s['capped_forecasts']:,})"
                for s in result["summaries"]
            ),
        ]
    if live:
        lines += [
            "",
            "Live run: "
            + "; ".join(
                f"{s['variant']} {s['failed']} failed, {s['start_timeouts']} start timeouts, machine CPU "
                + ("?" if s["machine_cpu_busy"] is None else f"{s['machine_cpu_busy']:.0%}")
                + f" busy, load {s['load_avg_1m']:.1f}, engine lag resets {s['engine_lag_resets']:.0f}, "
                f"router fallbacks {s['router_fallbacks']:.0f}"
                for s in result["summaries"]
            ),
        ]
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
        mode: str = typer.Option("sim", help="sim: the simulator; live: a router + emulated engines."),
        out: Path = typer.Option(None, help="Output folder. (default: results/experiments/provision-MODE)"),
        num_requests: int = typer.Option(
            None, min=1, help="Requests per run. (default: sim 10000, live 360)"
        ),
        qps: float = typer.Option(None, min=0.001, help="(default: sim 24, live 5)"),
        slo_e2e: float = typer.Option(None, "--slo-e2e", help="E2E SLO (s). (default: sim 70, live 20)"),
        initial_instances: int = typer.Option(
            None, min=1, help="Instances at the start (provisioned runs). (default: sim 6, live 2)"
        ),
        max_instances: int = typer.Option(None, min=1, help="(default: sim 12, live 4)"),
        static_instances: int = typer.Option(
            None, min=1, help="Size of the static baseline. (default: sim 10, live 3)"
        ),
        startup_delay_s: float = typer.Option(
            DEFAULT_STARTUP_DELAY_S, min=0.0, help="Sim: scale-up to serving (live: the real engine boot)."
        ),
        cooldown_s: float = typer.Option(None, min=0.0, help="(default: sim 30, live 10)"),
        scale_down_hold_s: float = typer.Option(None, min=0.0, help="(default: sim 120, live 30)"),
        max_model_len: int = typer.Option(
            None, min=2, help="Longest request (prompt + output tokens). (default: sim 4096, live 512)"
        ),
        max_num_seqs: int = typer.Option(
            None, min=1, help="Engine batch limit. (default: sim the profile's (48), live 8)"
        ),
        forecast_horizon: float = typer.Option(
            2.0, min=0.0, help="Sim: forecasts stop at this multiple of the SLO (0: run each to the end)."
        ),
        start_timeout_s: float = typer.Option(
            60.0, min=0.1, help="Live: an engine not healthy this long after its start is released."
        ),
        no_scale_down: bool = typer.Option(False, "--no-scale-down", help="Only ever add (as the paper)."),
        scale_up_fraction: float = typer.Option(
            1.0,
            min=0.0,
            max=1.0,
            help="Preemptive: scale up when a forecast passes this share of the SLO (1: the paper's rule).",
        ),
        anticipate_arrivals: bool = typer.Option(
            False, "--anticipate-arrivals", help="Forecasts add the arrivals expected at the fleet's rate."
        ),
        variants: str = typer.Option("static,reactive,preemptive", help="Comma-separated."),
        policy: str = typer.Option("block"),
        profile: str = typer.Option("llama-2-7b-a30", help="Step-time profile of the instances."),
        seed: int = typer.Option(0),
        workers: int = typer.Option(3, min=1, help="Sim: variants simulated in parallel processes."),
        executor: str = typer.Option("local", help=EXECUTOR_HELP),
    ) -> None:
        """Figure 8: static vs reactive vs preemptive provisioning (sim: 6 of 12 at start, QPS 24)."""
        if mode not in ("sim", "live"):
            raise typer.BadParameter("mode is sim or live", param_hint="--mode")
        names = tuple(v.strip() for v in variants.split(",") if v.strip())
        bad = [v for v in names if v not in (STATIC, REACTIVE, PREEMPTIVE)]
        if bad or not names:
            raise typer.BadParameter(f"variants are static, reactive, preemptive (got {variants!r})")
        given = {
            "num_requests": num_requests,
            "qps": qps,
            "slo_s": slo_e2e,
            "initial_instances": initial_instances,
            "max_instances": max_instances,
            "static_instances": static_instances,
            "cooldown_s": cooldown_s,
            "scale_down_hold_s": scale_down_hold_s,
            "max_model_len": max_model_len,
            "max_num_seqs": max_num_seqs,
        }
        defaults = LIVE_DEFAULTS if mode == "live" else {}
        chosen = {**defaults, **{k: v for k, v in given.items() if v is not None}}
        try:
            args = ProvisionArgs(
                **chosen,
                startup_delay_s=startup_delay_s,
                scale_down=not no_scale_down,
                forecast_horizon=forecast_horizon,
                scale_up_fraction=scale_up_fraction,
                start_timeout_s=start_timeout_s,
                anticipate_arrivals=anticipate_arrivals,
                policy=policy,
                profile=profile,
                seed=seed,
                variants=names,
            )
            out = out or Path(f"results/experiments/provision-{mode}")
            if mode == "live":
                run_live_experiment(args, out, echo=typer.echo)
            else:
                run_sim(args, out, echo=typer.echo, workers=workers, executor=parse_executor(executor))
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
        typer.echo(f"wrote {out}/results.json, report.md, provision.png")
