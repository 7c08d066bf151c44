"""`block experiment main|prediction|config-search|sim-vs-live`: the paper's experiments.

Each writes results JSON (block bench schema), PNG plots and a markdown report into --out.
`--mode sim` runs them at full scale in the cluster simulator; `--mode live` on emulated engines.
"""

from __future__ import annotations

from pathlib import Path

import typer

MODE_HELP = "sim: the cluster simulator (full scale); live: emulated engines + router (scaled down)."


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


def _runner(mode: str, workers: int):  # noqa: ANN202 - a plan.Runner
    from block.experiments.runners import get_runner

    try:
        return get_runner(mode, workers)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--mode") from None


def register(app: typer.Typer) -> None:
    exp = typer.Typer(help="The Block paper's experiments, simulated or live.", no_args_is_help=True)

    @exp.command("main")
    def main_cmd(
        mode: str = typer.Option("sim", help=MODE_HELP),
        out: Path = typer.Option(Path("results/experiments/main"), help="Output directory."),
        num_requests: int = typer.Option(10_000, min=1, help="Requests per run."),
        qps: str = typer.Option(None, help="Rates (default 20:36:2)."),
        policies: str = typer.Option(None, help="Comma-separated policies (default: all)."),
        seed: int = typer.Option(0),
        workers: int = typer.Option(2, min=1, help="Simulated runs in parallel."),
    ) -> None:
        """Figure 6: all policies, QPS 20-36, 12 x A30 (chunk 512, 48 seqs); capacity at P99 TTFT <= 3 s."""
        from block.experiments.main import MainArgs, run

        kw: dict = {"num_requests": num_requests, "seed": seed}
        if (r := _rates(qps)) is not None:
            kw["rates"] = r
        if (p := _policies(policies)) is not None:
            kw["policies"] = p
        run(MainArgs(**kw), _runner(mode, workers), out)

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
        run(ConfigSearchArgs(**kw), _runner(mode, workers), out)

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
    ) -> None:
        """Figure 5: forecast error per routed request and best-instance accuracy on a sample."""
        from block.experiments.prediction import PredictionArgs, run_live, run_sim

        args = PredictionArgs(
            qps=qps, num_requests=num_requests, instances=instances, sample_rate=sample_rate, seed=seed
        )
        if mode == "sim":
            run_sim(args, out)
        elif mode == "live":
            run_live(args, out)
        else:
            raise typer.BadParameter("choose sim or live", param_hint="--mode")

    @exp.command("sim-vs-live")
    def sim_vs_live_cmd(
        mode: str = typer.Option("sim", help=MODE_HELP),
        out: Path = typer.Option(
            Path("results/experiments/sim-vs-live"), help="Output directory (shared by both modes)."
        ),
        num_requests: int = typer.Option(400, min=1),
        qps: str = typer.Option(None, help="Rates (default 6,9)."),
        policies: str = typer.Option(None, help="Default: block,llumnix,round-robin."),
        seed: int = typer.Option(0),
        workers: int = typer.Option(2, min=1),
    ) -> None:
        """The same reduced-scale workload through both modes: P99 TTFT and E2E side by side (goal: 10%)."""
        from block.experiments.sim_vs_live import SimVsLiveArgs, run

        kw: dict = {"num_requests": num_requests, "seed": seed}
        if (r := _rates(qps)) is not None:
            kw["rates"] = r
        if (p := _policies(policies)) is not None:
            kw["policies"] = p
        run(SimVsLiveArgs(**kw), _runner(mode, workers), out)

    app.add_typer(exp, name="experiment")
