"""`block experiment main|prediction|config-search|sim-vs-live|lengths|model-error|overload|prefix|hetero`:
the paper's experiments and ours.

Each writes results JSON (block bench schema), PNG plots and a markdown report into --out.
`--mode sim` runs them at full scale in the cluster simulator; `--mode live` on emulated engines.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from block.sim.cli import EXECUTOR_HELP

if TYPE_CHECKING:
    from block.sim.workload import WorkloadSpec

MODE_HELP = "sim: the cluster simulator (full scale); live: emulated engines + router (scaled down)."
PARALLEL_HELP = "Live: clusters run side by side, one per policy, fed the same requests (1: one at a time)."
MAX_MODEL_LEN_HELP = (
    "Live: prompt + output at most (ShareGPT's longest answers would hold a run for minutes)."
)

# `main --mode live`: Figure 6 scaled to a 2-core machine, 3-6 minutes. Four A30 engines per policy
# and three policies side by side stream ~2,000-3,000 tokens/s each; 400 requests per rate; one extra
# rate (22) for policies still under the SLO at 18.
LIVE_MAIN: dict = {
    "instances": 4,
    "policies": ["block", "llumnix", "round-robin"],
    "rates": [10.0, 14.0, 18.0],
    "num_requests": 400,
    "extend_to": 1.25,
}
LIVE_MAX_MODEL_LEN = 1024
ME_POLICIES = ["block", "block+calibration", "llumnix", "po2", "least-requests", "round-robin"]
PREFIX_WORKLOADS = ["sharegpt-chat", "shared-prefix:32:1024", "sharegpt"]
PREFIX_POLICIES = ["block", "cache-aware", "prefix-load", "kv-overlap", "llumnix", "round-robin"]


def _rates(text: str | None) -> list[float] | None:
    if text is None:
        return None
    from block.sim.cli import parse_rates

    return parse_rates(text)


def _policies(text: str | None) -> list[str] | None:
    if text is None:
        return None
    from block.sim.cli import parse_policies

    return parse_policies(text)


def _check_workload(spec: WorkloadSpec) -> None:
    """Load a run's workload before any run: a bad spec or a missing file fails in one line (the samples
    stay cached for the runs)."""
    from block.errors import fail
    from block.sim.workload import requests_for

    try:
        requests_for(spec, 1.0)
    except (ValueError, OSError) as e:
        fail(str(e))


def _runner(mode: str, workers: int, executor: str = "local", **live: object):  # noqa: ANN202 - a plan.Runner
    """`executor`: --executor, for --mode sim (live runs drive engines on this machine)."""
    from block.experiments.runners import get_runner
    from block.sim.cli import parse_executor

    sim = {"executor": parse_executor(executor)} if mode == "sim" else {}
    try:
        return get_runner(mode, workers, **sim, **(live if mode == "live" else {}))
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--mode") from None


def register(app: typer.Typer) -> None:
    exp = typer.Typer(help="The Block paper's experiments, simulated or live.", no_args_is_help=True)

    @exp.command("main")
    def main_cmd(
        mode: str = typer.Option("sim", help=MODE_HELP),
        out: Path = typer.Option(Path("results/experiments/main"), help="Output directory."),
        num_requests: int = typer.Option(None, min=1, help="Requests per run (default 10,000; live 400)."),
        qps: str = typer.Option(None, help="Rates (default 20:36:2; live 10,14,18)."),
        policies: str = typer.Option(
            None, help="Comma-separated policies (default: all; live block,llumnix,round-robin)."
        ),
        instances: int = typer.Option(None, min=1, help="Instances per cluster (default 12; live 4)."),
        seed: int = typer.Option(0),
        workers: int = typer.Option(2, min=1, help="Simulated runs in parallel."),
        executor: str = typer.Option("local", help=EXECUTOR_HELP),
        parallel: int = typer.Option(3, min=1, help=PARALLEL_HELP),
        max_model_len: int = typer.Option(LIVE_MAX_MODEL_LEN, min=16, help=MAX_MODEL_LEN_HELP),
    ) -> None:
        """Figure 6: all policies, QPS 20-36, 12 x A30 (chunk 512, 48 seqs, prefix caching off as in the
        paper's vLLM 0.7.2); capacity at P99 TTFT <= 3 s.

        `--mode live` runs a scaled-down version (4 instances, 3 policies side by side, 400 requests
        per rate, contexts of 1,024 tokens) in 3-6 minutes on a 2-core machine."""
        from block.experiments.main import MainArgs, run

        kw: dict = dict(LIVE_MAIN) if mode == "live" else {}
        kw["seed"] = seed
        if num_requests is not None:
            kw["num_requests"] = num_requests
        if instances is not None:
            kw["instances"] = instances
        if (r := _rates(qps)) is not None:
            kw["rates"] = r
        if (p := _policies(policies)) is not None:
            kw["policies"] = p
        live = {"max_parallel": parallel, "workload_overrides": {"max_model_len": max_model_len}}
        run(MainArgs(**kw), _runner(mode, workers, executor, **live), out)

    @exp.command("config-search")
    def config_search_cmd(
        mode: str = typer.Option("sim", help=MODE_HELP),
        out: Path = typer.Option(Path("results/experiments/config-search"), help="Output directory."),
        num_requests: int = typer.Option(10_000, min=1, help="Requests per run."),
        qps: str = typer.Option(
            None, help="A fixed rate grid for every row (default: from a pilot per row)."
        ),
        policies: str = typer.Option(
            None, help="Comma-separated policies (default: block,llumnix,round-robin)."
        ),
        rows: str = typer.Option(None, help="Comma-separated row names (default: all)."),
        seed: int = typer.Option(0),
        workers: int = typer.Option(2, min=1),
        executor: str = typer.Option("local", help=EXECUTOR_HELP),
    ) -> None:
        """Table 2: capacity per (max seqs, chunk) and extension rows (another model, arXiv lengths)."""
        from block.experiments.config_search import ConfigSearchArgs, default_rows, run

        kw: dict = {"num_requests": num_requests, "seed": seed, "rates": _rates(qps)}
        if (p := _policies(policies)) is not None:
            kw["policies"] = p
        if rows is not None:
            wanted = [r.strip() for r in rows.split(",") if r.strip()]
            known = {r.name: r for r in default_rows()}
            if unknown := [r for r in wanted if r not in known]:
                raise typer.BadParameter(
                    f"unknown rows {unknown}; known: {', '.join(known)}", param_hint="--rows"
                )
            kw["rows"] = [known[r] for r in wanted]
        run(ConfigSearchArgs(**kw), _runner(mode, workers, executor), out)

    @exp.command("prediction")
    def prediction_cmd(
        mode: str = typer.Option("sim", help=MODE_HELP),
        out: Path = typer.Option(Path("results/experiments/prediction"), help="Output directory."),
        num_requests: int = typer.Option(10_000, min=1),
        qps: float = typer.Option(28.0, help="Request rate."),
        instances: int = typer.Option(12, min=1),
        sample_rate: float = typer.Option(
            0.01, min=0.0, max=1.0, help="Decisions replayed on every instance."
        ),
        seed: int = typer.Option(0),
        policy: str = typer.Option(
            "block",
            help="Sim: the routing policy; it must forecast (block, block-po2, or shadow-round-robin, which "
            "forecasts every instance but routes round robin, as the live benchmark does).",
        ),
        anticipate_arrivals: bool = typer.Option(
            False,
            "--anticipate-arrivals",
            help="Forecasts add the arrivals expected at each instance's recent routing rate.",
        ),
        fork: bool = typer.Option(
            False,
            "--fork",
            help="Sim: also judge each sampled decision by rerunning the whole cluster with the request on "
            "each instance (later arrivals included, as live; one rerun per instance and decision).",
        ),
    ) -> None:
        """Figure 5: forecast error per routed request and best-instance accuracy on a sample."""
        from block.experiments.prediction import PredictionArgs, run_live, run_sim
        from block.policies import POLICIES

        if policy not in POLICIES or not POLICIES[policy].wants_forecasts:
            forecasting = ", ".join(sorted(p for p, cls in POLICIES.items() if cls.wants_forecasts))
            raise typer.BadParameter(
                f"{policy!r} is not a forecasting policy ({forecasting})", param_hint="--policy"
            )

        args = PredictionArgs(
            qps=qps,
            num_requests=num_requests,
            instances=instances,
            sample_rate=sample_rate,
            seed=seed,
            policy=policy,
            anticipate_arrivals=anticipate_arrivals,
            fork=fork,
        )
        if mode == "sim":
            run_sim(args, out)
        elif mode == "live":
            run_live(args, out)
        else:
            raise typer.BadParameter("choose sim or live", param_hint="--mode")

    @exp.command("sim-vs-live")
    def sim_vs_live_cmd(
        mode: str = typer.Option("both", help="both (default): the simulator, then live; or sim | live."),
        out: Path = typer.Option(
            Path("results/experiments/sim-vs-live"), help="Output directory (shared by both modes)."
        ),
        num_requests: int = typer.Option(400, min=1),
        qps: str = typer.Option(None, help="Rates (default 6,9)."),
        policies: str = typer.Option(None, help="Default: block,llumnix,round-robin."),
        instances: int = typer.Option(4, min=1),
        max_model_len: int = typer.Option(LIVE_MAX_MODEL_LEN, min=16, help="Prompt + output at most."),
        seed: int = typer.Option(0),
        workers: int = typer.Option(2, min=1),
        executor: str = typer.Option("local", help=EXECUTOR_HELP),
        parallel: int = typer.Option(3, min=1, help=PARALLEL_HELP),
        dataset: str = typer.Option(
            "sharegpt", help="Workload spec; for sessions (sharegpt-chat) --qps is sessions started per s."
        ),
        think_time: float = typer.Option(5.0, min=0.0, help="Session workloads: mean think time (s)."),
    ) -> None:
        """The same reduced-scale workload through both modes: mean and P99 TTFT and E2E side by side
        (goal: P99s within 10%). About 3 minutes with the defaults."""
        from block.experiments.sim_vs_live import SimVsLiveArgs, plan, run

        kw: dict = {
            "num_requests": num_requests,
            "seed": seed,
            "instances": instances,
            "max_model_len": max_model_len,
            "dataset": dataset,
            "think_time_s": think_time,
        }
        if (r := _rates(qps)) is not None:
            kw["rates"] = r
        if (p := _policies(policies)) is not None:
            kw["policies"] = p
        args = SimVsLiveArgs(**kw)
        _check_workload(plan(args)[0].workload)
        modes = ["sim", "live"] if mode == "both" else [mode]
        # The specs fix the workload's max_model_len already: no live override needed.
        runners = [_runner(m, workers, executor, max_parallel=parallel) for m in modes]
        run(args, runners, out)

    @exp.command("lengths")
    def lengths_cmd(
        mode: str = typer.Option("sim", help="sim only: the cluster simulator."),
        out: Path = typer.Option(Path("results/experiments/lengths"), help="Output directory."),
        lengths: str = typer.Option(
            "known,estimated,quantile:0.7,quantile:0.9",
            help="Comma-separated: known, estimated (median) or quantile:Q.",
        ),
        num_requests: int = typer.Option(10_000, min=1, help="Requests per run."),
        qps: str = typer.Option(None, help="Rates (default 32,34,36,37,38)."),
        instances: int = typer.Option(12, min=1),
        split: str = typer.Option("held-out", help="Prompts: held-out (unseen by the length model) or all."),
        seeds: str = typer.Option("0", help="Comma-separated seeds; latencies and capacity are averaged."),
        workers: int = typer.Option(2, min=1, help="Simulated runs in parallel."),
        executor: str = typer.Option("local", help=EXECUTOR_HELP),
        length_models: str = typer.Option(
            None,
            "--length-models",
            help="Compare length models: NAME=FILE,... (FILE a length model .npz or 'default'), e.g. "
            "tfidf=default,finetune=ft.npz; default: the shipped model alone.",
        ),
    ) -> None:
        """Block planning with known, median-estimated or quantile-estimated lengths: P99 and capacity
        (per length model with --length-models)."""
        from block.experiments.lengths import LengthsArgs, run

        if mode != "sim":
            raise typer.BadParameter("the lengths experiment runs in the simulator only", param_hint="--mode")
        kw: dict = {"num_requests": num_requests, "instances": instances, "split": split}
        kw["lengths"] = [x.strip() for x in lengths.split(",") if x.strip()]
        kw["seeds"] = [int(x) for x in seeds.split(",") if x.strip()]
        if (r := _rates(qps)) is not None:
            kw["rates"] = r
        if length_models:
            pairs = [x.strip().partition("=") for x in length_models.split(",") if x.strip()]
            if any(not sep or not path for _, sep, path in pairs):
                raise typer.BadParameter("expected NAME=FILE,...", param_hint="--length-models")
            kw["models"] = {name.strip(): path.strip() for name, _, path in pairs}
        try:
            args = LengthsArgs(**kw)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
        run(args, _runner(mode, workers, executor), out)

    @exp.command("model-error")
    def model_error_cmd(
        mode: str = typer.Option("sim", help="sim only: the cluster simulator."),
        out: Path = typer.Option(Path("results/experiments/model-error"), help="Output directory."),
        policies: str = typer.Option(None, help="Comma-separated (default: " + ",".join(ME_POLICIES) + ")."),
        errors: str = typer.Option("0.1,0.2,0.4", help="Error levels E, fractions (0 is always measured)."),
        kinds: str = typer.Option("static,drift,correlated", help="Model error kinds."),
        num_requests: int = typer.Option(4_000, min=100, help="Requests per simulated run."),
        seed: int = typer.Option(0),
        workers: int = typer.Option(2, min=1, help="Capacity searches in parallel (processes)."),
        executor: str = typer.Option("local", help=EXECUTOR_HELP),
    ) -> None:
        """Capacity (P99 TTFT <= 3 s, 12 x A30, ShareGPT) of each policy when the engines run at a true
        speed the router's profile does not know: static, drifting or fleet-wide correlated error.
        One capacity search per cell (block/sim/capacity.py), runs clearly over the SLO stopped early;
        the runs of block's forecasting policies are most of the cost. With the defaults: 211 runs, 790
        CPU seconds, 11 minutes of wall on a 2-core machine shared at load 0.3-7. Every run's records
        are kept under --out/runs, from which an interrupted experiment resumes."""
        from block.experiments.model_error import ModelErrorArgs, run

        if mode != "sim":
            raise typer.BadParameter(
                "the model-error experiment runs in the simulator only", param_hint="--mode"
            )
        kw: dict = {"num_requests": num_requests, "seed": seed, "workers": workers}
        if policies is not None:  # POLICY or POLICY+calibration
            from block.experiments.model_error import CALIBRATED

            names = [p.strip() for p in policies.split(",") if p.strip()]
            _policies(",".join(n.removesuffix(CALIBRATED) for n in names))  # unknown ones fail here
            kw["policies"] = names
        try:
            kw["errors"] = [float(x) for x in errors.split(",") if x.strip()]
            kw["kinds"] = [x.strip() for x in kinds.split(",") if x.strip()]
            args = ModelErrorArgs(**kw)
        except ValueError as e:
            raise typer.BadParameter(str(e).splitlines()[0]) from None
        from block.sim.cli import parse_executor

        run(args, out, executor=parse_executor(executor))

    @exp.command("prefix")
    def prefix_cmd(
        mode: str = typer.Option("sim", help=MODE_HELP),
        out: Path = typer.Option(Path("results/experiments/prefix"), help="Output directory."),
        workloads: str = typer.Option(
            ",".join(PREFIX_WORKLOADS),
            help="Comma-separated dataset specs (sharegpt-chat: --qps starts sessions).",
        ),
        policies: str = typer.Option(
            None,
            help="Comma-separated (default: " + ",".join(PREFIX_POLICIES) + "); `ceiling` adds the bound "
            "of what cache affinity can add (sim: llumnix where a block computed anywhere is cached).",
        ),
        num_requests: int = typer.Option(
            None, min=1, help="Requests (turns) per run (default 4,000; live 300)."
        ),
        instances: int = typer.Option(None, min=1, help="Instances per cluster (default 12; live 4)."),
        qps: str = typer.Option(None, help="Live: fixed rates for every workload (default: per workload)."),
        think_time: float = typer.Option(5.0, min=0.0, help="Session workloads: mean think time (s)."),
        max_probes: int = typer.Option(8, min=1, help="Sim: probes per capacity search."),
        seed: int = typer.Option(0),
        workers: int = typer.Option(2, min=1, help="Simulated runs in parallel."),
        executor: str = typer.Option("local", help=EXECUTOR_HELP),
        parallel: int = typer.Option(3, min=1, help=PARALLEL_HELP),
        max_model_len: int = typer.Option(
            None, min=16, help="Prompt + output at most (default 4096; live 2048)."
        ),
    ) -> None:
        """Prefix caching on: capacity (P99 TTFT <= 3 s) and prefix-cache hit rate of block, the peers'
        cache-aware routers and cache-blind ones on multi-turn chat, shared system prompts and first-turn
        ShareGPT. `--mode sim`: 12 x A30, a capacity search per workload and policy (106 runs; 11 minutes
        on a quiet 2-core machine); `--mode live`: 4 emulated engines at fixed rates. Resumes from --out."""
        from block.experiments.prefix import PrefixArgs, run

        live = mode == "live"
        kw: dict = {"seed": seed, "think_time_s": think_time, "max_probes": max_probes}
        kw["workloads"] = [w.strip() for w in workloads.split(",") if w.strip()]
        kw["num_requests"] = num_requests or (300 if live else 4_000)
        kw["instances"] = instances or (4 if live else 12)
        kw["max_model_len"] = max_model_len or (2048 if live else 4096)
        if policies is not None:  # `ceiling` is the experiment's own bound, not a policy
            names = [n.strip() for n in policies.split(",") if n.strip()]
            if "ceiling" in names and live:
                raise typer.BadParameter("ceiling is a simulated bound: --mode sim only")
            if real := [n for n in names if n != "ceiling"]:
                _policies(",".join(real))  # unknown names fail here, in one line
            kw["policies"] = names
        if (r := _rates(qps)) is not None:
            kw["rates"] = dict.fromkeys(kw["workloads"], r)
        try:
            args = PrefixArgs(**kw)
        except ValueError as e:
            raise typer.BadParameter(str(e).splitlines()[0]) from None
        for w in args.workloads:
            _check_workload(args.workload(w))
        run(args, _runner(mode, workers, executor, max_parallel=parallel), out)

    from block.experiments.provision import register as register_provision

    register_provision(exp)  # `block experiment provision`: Figure 8, lives with the provisioning code
    from block.experiments.hetero_cli import register as register_hetero

    register_hetero(exp)  # `block experiment hetero`: mixed fleets

    @exp.command("overload")
    def overload_cmd(
        mode: str = typer.Option("sim", help=MODE_HELP),
        out: Path = typer.Option(Path("results/experiments/overload"), help="Output directory."),
        num_requests: int = typer.Option(
            None, min=1, help="Requests per run (default 3,000; live and --live-scale 1,000)."
        ),
        instances: int = typer.Option(None, min=1, help="Instances per cluster (default 12; live 4)."),
        loads: str = typer.Option("0.5,1,1.5,2", help="Offered loads, x block's capacity without admission."),
        variants: str = typer.Option(
            "block+off,block+queue,block+reject,llumnix,round-robin",
            help="POLICY or POLICY+ADMISSION (off, queue, reject).",
        ),
        workloads: str = typer.Option("sharegpt,gamma-cv3", help="sharegpt (Poisson) and/or gamma-cv3."),
        priority_share: float = typer.Option(0.2, min=0.0, max=1.0, help="Share of high-priority requests."),
        seed: int = typer.Option(0),
        workers: int = typer.Option(2, min=1, help="Simulated runs in parallel."),
        executor: str = typer.Option("local", help=EXECUTOR_HELP),
        parallel: int = typer.Option(3, min=1, help=PARALLEL_HELP),
        max_model_len: int = typer.Option(LIVE_MAX_MODEL_LEN, min=16, help=MAX_MODEL_LEN_HELP),
        live_scale: bool = typer.Option(
            False,
            "--live-scale",
            help="Sim: run at the live scale (4 instances, 1,000 requests, --max-model-len, the same "
            "capacity guesses), the simulator's side of a comparison with --mode live.",
        ),
    ) -> None:
        """Goodput against offered load (0.5-2x block's capacity), with admission off / queue / reject,
        llumnix and round robin, on ShareGPT and bursty gamma (CV 3) arrivals; TTFT target 3 s, 20%
        high priority. Writes summary.json, report.md and goodput.png."""
        from block.admission import MODES
        from block.experiments.overload import (
            LIVE_INSTANCES,
            LIVE_REQUESTS,
            WORKLOADS,
            OverloadArgs,
            live_args,
            run,
            split_variant,
        )

        kw: dict = {"seed": seed, "priority_share": priority_share}
        kw["loads"] = [float(x) for x in loads.split(",") if x.strip()]
        kw["variants"] = [v.strip() for v in variants.split(",") if v.strip()]
        kw["workloads"] = [w.strip() for w in workloads.split(",") if w.strip()]
        for v in kw["variants"]:
            policy, admission = split_variant(v)
            _policies(policy)
            if admission not in MODES:
                raise typer.BadParameter(f"{v}: admission must be one of {', '.join(MODES)}")
        unknown = [w for w in kw["workloads"] if w not in WORKLOADS]
        if unknown:
            raise typer.BadParameter(f"unknown workload(s) {unknown} (known: {', '.join(WORKLOADS)})")
        at_live_scale = mode == "live" or live_scale
        if num_requests is not None:
            kw["num_requests"] = num_requests
        elif at_live_scale:
            kw["num_requests"] = LIVE_REQUESTS
        args = OverloadArgs(**kw)
        if at_live_scale:
            args = live_args(args, instances or LIVE_INSTANCES, max_model_len)
        elif instances is not None:
            args = OverloadArgs(**{**kw, "instances": instances})
        live = {"max_parallel": parallel, "workload_overrides": {"max_model_len": max_model_len}}
        summary = run(args, _runner(mode, workers, executor, **live), out)
        if mode == "live":  # the simulator at the same scale, side by side (overload_compare.py)
            from block.experiments.overload_compare import write

            sim = run(args, _runner("sim", workers, executor), out / "sim")
            typer.echo(write(out, sim, summary))

    app.add_typer(exp, name="experiment")
