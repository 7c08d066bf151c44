"""`block experiment hetero --mode sim|live --out DIR`: policies on mixed fleets (experiments/hetero.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from block.sim.cli import EXECUTOR_HELP


def register(exp: typer.Typer) -> None:
    @exp.command("hetero")
    def hetero_cmd(
        mode: str = typer.Option(
            "sim", help="sim: capacity search at full scale; live: 2 + 2 emulated engines."
        ),
        out: Path = typer.Option(Path("results/experiments/hetero"), help="Output directory."),
        fleets: str = typer.Option("mixed-a100-a30,mixed-seqs", help="Comma-separated fleets."),
        policies: str = typer.Option(
            None,
            help="Comma-separated policies (default block,llumnix,infaas,least-requests,round-robin; "
            "live block,llumnix,round-robin).",
        ),
        num_requests: int = typer.Option(None, min=1, help="Requests per run (default 6,000; live 300)."),
        qps: str = typer.Option(None, help="Live: rates (default 8,12,16)."),
        seed: int = typer.Option(0),
        workers: int = typer.Option(2, min=1, help="Simulated runs in parallel."),
        executor: str = typer.Option("local", help=EXECUTOR_HELP),
        parallel: int = typer.Option(
            1, min=1, help="Live: clusters side by side, one per policy (1: valid on a busy 2-core machine)."
        ),
        max_model_len: int = typer.Option(1024, min=16, help="Live: prompt + output at most."),
    ) -> None:
        """6 x A100 + 6 x A30 (`mixed-a100-a30`) and 12 x A30 with max seqs 24 / 48 (`mixed-seqs`),
        Llama-2-7B, ShareGPT: capacity at P99 TTFT <= 3 s per policy, requests served per instance
        kind, a plot and DIR/summary.json. `--mode live`: 2 fast + 2 slow engines at a few rates, and
        the simulator on the same specs (P99 E2E agreement)."""
        from block.experiments.cli import _policies, _rates, _runner
        from block.experiments.hetero import HeteroArgs, live_args, run_live, run_sim

        kw: dict = {"seed": seed, "fleets": [f.strip() for f in fleets.split(",") if f.strip()]}
        if num_requests is not None:
            kw["num_requests"] = num_requests
        if (p := _policies(policies)) is not None:
            kw["policies"] = p
        if (r := _rates(qps)) is not None:
            kw["rates"] = r
        try:
            args = HeteroArgs(**kw)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--fleets") from None
        if mode == "sim":
            run_sim(args, _runner("sim", workers, executor), out)
        elif mode == "live":
            live = {"max_parallel": parallel, "workload_overrides": {"max_model_len": max_model_len}}
            run_live(
                live_args(args), _runner("live", workers, **live), _runner("sim", workers, executor), out
            )
        else:
            raise typer.BadParameter("choose sim or live", param_hint="--mode")
