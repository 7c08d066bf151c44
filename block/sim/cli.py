"""`block simulate`: policies x rates on a simulated cluster; `block simulate bench`: simulator speed."""

from __future__ import annotations

import json
from pathlib import Path

import typer

DEFAULT_POLICIES = "block,llumnix,infaas,min-qpm,round-robin,random"
# "\\[": a bracket, not rich markup, in --help
EXECUTOR_HELP = (
    "Where the runs execute: local (--workers processes here), ray (Ray tasks on a runtime started here) "
    "or ray:ADDRESS (an existing Ray cluster: auto, HOST:6379, ray://HOST:10001); on Ray, one task per "
    "run, as many at once as the cluster has CPUs. Ray: pip install 'block-llm\\[ray]'."
)


def parse_rates(text: str) -> list[float]:
    """'20:36:2' (start:stop:step, stop included), '20,24,28' or '28'."""
    text = text.strip()
    if ":" in text:
        parts = [float(x) for x in text.split(":")]
        if len(parts) != 3 or parts[2] <= 0 or parts[1] < parts[0]:
            raise typer.BadParameter("write START:STOP:STEP with STEP > 0 and STOP >= START")
        start, stop, step = parts
        n = int(round((stop - start) / step + 1e-9)) + 1
        return [round(start + i * step, 6) for i in range(n)]
    try:
        rates = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"bad rate list {text!r}") from None
    if not rates or any(r <= 0 for r in rates):
        raise typer.BadParameter("rates must be > 0")
    return rates


def parse_policies(text: str) -> list[str]:
    from block.policies import POLICIES

    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in names if p not in POLICIES]
    if unknown or not names:
        raise typer.BadParameter(
            f"unknown policy {', '.join(unknown)} (known: {', '.join(sorted(POLICIES))})"
        )
    return names


def parse_executor(text: str):  # noqa: ANN201 - an ExecutorSpec (imported late: the CLI starts fast)
    """`--executor local|ray|ray:ADDRESS`, connected at once: a missing Ray (the error names the extra to
    install) or an unreachable cluster fails in one line, before any run."""
    from block.errors import fail
    from block.sim.executor import ExecutorSpec, ExecutorUnavailable

    try:
        spec = ExecutorSpec.parse(text)
        spec.connect()
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--executor") from None
    except ExecutorUnavailable as e:
        fail(str(e))
    return spec


def register(app: typer.Typer) -> None:
    sim_app = typer.Typer(
        help="Simulate a cluster in virtual time: the same replica model and policies as live serving.",
        invoke_without_command=True,
    )

    @sim_app.callback(invoke_without_command=True)
    def simulate_cmd(
        ctx: typer.Context,
        instances: int = typer.Option(12, min=1, help="Instances in the cluster.", rich_help_panel="Cluster"),
        fleet: str = typer.Option(
            None,
            help="A mixed fleet: a fleet file (its groups) or COUNT:PROFILE[:KEY=VALUE],... e.g. "
            "6:llama-2-7b-a100,6:llama-2-7b-a30:max_num_seqs=24 (sets --instances; per-instance settings "
            "win over the fleet-wide flags).",
            rich_help_panel="Cluster",
        ),
        profile: str = typer.Option(
            "llama-2-7b-a30", help="Step-time profile (name or .json path).", rich_help_panel="Cluster"
        ),
        policies: str = typer.Option(
            DEFAULT_POLICIES, help="Comma-separated policies.", rich_help_panel="Routing"
        ),
        dataset: str = typer.Option(
            "sharegpt", help="Workload spec (see `block bench --help`).", rich_help_panel="Workload"
        ),
        qps: str = typer.Option(
            "20:36:2", help="Rates: START:STOP:STEP, a list 20,28 or one rate.", rich_help_panel="Workload"
        ),
        num_requests: int = typer.Option(10_000, min=1, help="Requests per run.", rich_help_panel="Workload"),
        process: str = typer.Option(
            "poisson", help="Arrivals: poisson | gamma | constant | trace.", rich_help_panel="Workload"
        ),
        burstiness: float = typer.Option(
            1.0, help="CV of gamma inter-arrival times (sets --process gamma).", rich_help_panel="Workload"
        ),
        seed: int = typer.Option(
            0, help="Seed of the workload, arrivals, step noise and policies.", rich_help_panel="Workload"
        ),
        think_time: float = typer.Option(
            5.0,
            min=0.0,
            help="Session workloads (sharegpt-chat): mean think time (s, exponential) between an answer "
            "and the next turn; --qps is then the rate at which sessions start.",
            rich_help_panel="Workload",
        ),
        noise: float = typer.Option(
            0.03, min=0.0, help="Relative std of step times (0: exact means).", rich_help_panel="Cluster"
        ),
        stall_probability: float = typer.Option(
            0.001, min=0.0, max=1.0, help="Chance a step stalls 3x.", rich_help_panel="Cluster"
        ),
        max_num_seqs: int = typer.Option(
            None, min=1, help="Engine max_num_seqs (default: the profile's).", rich_help_panel="Cluster"
        ),
        max_num_batched_tokens: int = typer.Option(
            None, min=1, help="Engine token budget per step.", rich_help_panel="Cluster"
        ),
        num_gpu_blocks: int = typer.Option(
            None, min=1, help="KV-cache blocks per instance.", rich_help_panel="Cluster"
        ),
        max_model_len: int = typer.Option(
            4096, min=2, help="Prompt + output tokens at most.", rich_help_panel="Cluster"
        ),
        workers: int = typer.Option(
            2, min=1, help="Runs simulated in parallel (--executor local).", rich_help_panel="Output"
        ),
        executor: str = typer.Option("local", help=EXECUTOR_HELP, rich_help_panel="Output"),
        keep_itl: bool = typer.Option(
            False, help="Keep per-request inter-token gaps in the files (large).", rich_help_panel="Output"
        ),
        slo_ttft_p99: float = typer.Option(
            3.0, help="P99 TTFT SLO (s) defining capacity.", rich_help_panel="Output"
        ),
        lengths: str = typer.Option(
            "known",
            help="Lengths the router plans with: known (true, ignore_eos), estimated (the length "
            "model's median on the prompt) or quantile:Q. Replicas always generate the true length.",
            rich_help_panel="Routing",
        ),
        split: str = typer.Option(
            "all",
            help="Prompts drawn from: all, or held-out (never seen by the length model).",
            rich_help_panel="Workload",
        ),
        anticipate_arrivals: bool = typer.Option(
            False,
            "--anticipate-arrivals",
            help="Forecasts add the arrivals expected at each instance's recent routing rate.",
            rich_help_panel="Routing",
        ),
        prefix_caching: bool = typer.Option(
            True,
            "--prefix-caching/--no-prefix-caching",
            help="Automatic prefix caching in the replicas, as vLLM V1 (on by default there too).",
            rich_help_panel="Cluster",
        ),
        prefix_ceiling: bool = typer.Option(
            False,
            "--prefix-ceiling",
            help="Research bound, no engine's model: every prompt block computed anywhere in the fleet "
            "counts as cached on every instance (hits free of compute, not of KV). A cache-blind policy's "
            "capacity with it bounds what any router's cache affinity can reach.",
            rich_help_panel="Cluster",
        ),
        model_error: str = typer.Option(
            "none",
            help="KIND:E: replicas run at a true speed the router's profile does not know, E a fraction "
            "(static: each its own factor in [1-E, 1+E]; drift: wandering in that band over minutes; "
            "correlated: the whole fleet up to E slower for seconds at a time).",
        ),
        calibration: bool = typer.Option(
            False,
            "--calibration",
            help="Online calibration: each tracker corrects its profile per phase (decode, prefill) from "
            "the token times its replica streams back, as the router does.",
            rich_help_panel="Routing",
        ),
        routers: int = typer.Option(
            1,
            min=1,
            help="Independent routers in front of the fleet, requests split round robin; each sees the "
            "engines' snapshots and only its own routes.",
            rich_help_panel="Routing",
        ),
        admission: str = typer.Option(
            "off",
            help="SLO-aware admission in front of every policy, as the router's --admission: off, "
            "queue (hold until a forecast meets the target) or reject (429 at once).",
            rich_help_panel="Admission",
        ),
        max_held: int = typer.Option(
            1000, min=0, help="Requests held at most (queue).", rich_help_panel="Admission"
        ),
        admission_ttft_ms: float = typer.Option(
            3000.0, help="Every request's TTFT target (ms).", rich_help_panel="Admission"
        ),
        admission_e2e_ms: float = typer.Option(
            None, help="Every request's E2E target (ms). (default: none)", rich_help_panel="Admission"
        ),
        priority_share: float = typer.Option(
            0.0,
            min=0.0,
            max=1.0,
            help="Share of high-priority requests (priority 1; the rest 0), as `block bench`.",
            rich_help_panel="Workload",
        ),
        out: Path = typer.Option(
            Path("results/sim"),
            help="Directory for one results JSON per policy and rate.",
            rich_help_panel="Output",
        ),
    ) -> None:
        """Run every policy at every rate; write results JSON, print a comparison and capacities."""
        if ctx.invoked_subcommand is not None:
            return
        from block.sim.sweep import SimulateArgs, simulate_main

        if burstiness != 1.0 and process == "poisson":
            process = "gamma"
        from block.sim.workload import SPLITS, parse_lengths

        try:
            parse_lengths(lengths)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--lengths") from None
        from block.profiles.model_error import parse_model_error

        try:
            parse_model_error(model_error)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--model-error") from None
        if split not in SPLITS:
            raise typer.BadParameter(f"choose one of {', '.join(SPLITS)}", param_hint="--split")
        if prefix_ceiling and not prefix_caching:
            raise typer.BadParameter("a bound on prefix caching needs it on", param_hint="--prefix-ceiling")
        engines = ()
        if fleet:
            from block.errors import fail
            from block.fleet.fleet_file import FleetFileError, load_fleet

            try:
                engines = tuple(load_fleet(fleet).engines())
            except FleetFileError as e:
                fail(str(e))
            instances = len(engines)
        from block.admission import MODES

        if admission not in MODES:
            raise typer.BadParameter(f"choose one of {', '.join(MODES)}", param_hint="--admission")
        simulate_main(
            SimulateArgs(
                instances=instances,
                profile=profile,
                policies=parse_policies(policies),
                dataset=dataset,
                rates=parse_rates(qps),
                num_requests=num_requests,
                process=process,
                burstiness=burstiness,
                seed=seed,
                noise=noise,
                stall_probability=stall_probability,
                max_num_seqs=max_num_seqs,
                max_num_batched_tokens=max_num_batched_tokens,
                num_gpu_blocks=num_gpu_blocks,
                max_model_len=max_model_len,
                workers=workers,
                executor=parse_executor(executor),
                keep_itl=keep_itl,
                slo_ttft_p99=slo_ttft_p99,
                out=out,
                lengths=lengths,
                split=split,
                anticipate_arrivals=anticipate_arrivals,
                model_error="" if model_error.strip().lower() == "none" else model_error,
                fleet=engines,
                think_time_s=think_time,
                calibration=calibration,
                prefix_caching=prefix_caching,
                prefix_ceiling=prefix_ceiling,
                routers=routers,
                admission=admission,
                max_held=max_held,
                admission_ttft_s=admission_ttft_ms / 1000.0,
                admission_e2e_s=None if admission_e2e_ms is None else admission_e2e_ms / 1000.0,
                priority_share=priority_share,
            )
        )

    @sim_app.command("bench")
    def bench_cmd(
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
        quick: bool = typer.Option(False, help="Scale (b) down to 100,000 requests on 100 instances."),
        only: str = typer.Option("a,b", help="Which cases to run: a, b, c, or a list (a,b,c)."),
        profile_out: Path = typer.Option(None, help="Write a cProfile of each case to PATH.<case>.prof."),
        requests: int = typer.Option(None, help="Run only the first N requests of each case (same rate)."),
    ) -> None:
        """Simulator speed: (a) 10,000 ShareGPT requests, 12 instances, block; (b) 1M requests, 1,000
        instances, round robin; (c) as (b) with block (only when asked: --only c). Goals: (a) <= 5 s,
        (b) <= 5 min, (c) <= 10 min."""
        from block.sim.bench import run_bench

        cases = [c.strip() for c in only.split(",") if c.strip()]
        try:
            report = run_bench(quick=quick, cases=cases, profile_out=profile_out, requests=requests)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
        if as_json:
            typer.echo(json.dumps(report, indent=2))
        else:
            from block.sim.bench import print_report

            print_report(report)

    app.add_typer(sim_app, name="simulate")
