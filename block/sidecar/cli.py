"""`block predictor ...`: the sidecar (default), its benchmark and its accuracy experiment."""

from __future__ import annotations

import json

import typer

from block.errors import fail


def register(app: typer.Typer) -> None:
    predictor_app = typer.Typer(
        help="Per-instance predictor: what-if forecasts from an engine's snapshot, as a sidecar service.",
        no_args_is_help=False,
    )

    @predictor_app.callback(invoke_without_command=True)
    def serve(
        ctx: typer.Context,
        engine: str = typer.Option(None, help="Base URL of the Block engine to follow (GET /state)."),
        port: int = typer.Option(8101, min=1, max=65535, help="TCP port of the sidecar."),
        host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
        refresh_ms: float = typer.Option(20.0, help="How often to poll the engine's /state."),
        profile: str | None = typer.Option(None, help="Profile name or JSON path (default: the engine's)."),
        default_output_tokens: int = typer.Option(256, help="Output length assumed when none is known."),
        anticipate_arrivals: bool = typer.Option(
            False,
            "--anticipate-arrivals",
            help="Forecasts add the arrivals to expect after the candidate: the rate and mean lengths of the "
            "requests reported to POST /routed over the last 10 s.",
        ),
        token: str | None = typer.Option(
            None,
            envvar="BLOCK_PREDICTOR_TOKEN",
            show_envvar=True,
            help="Require 'Authorization: Bearer TOKEN' on every POST (/predict, /predict_batch, /routed, "
            "/finished); /health and /metrics stay open. Prefer the environment variable: it does not "
            "show in ps.",
        ),
        routed_ttl_s: float = typer.Option(
            2.0,
            help="A request reported to /routed that no snapshot shows within this many seconds is "
            "forgotten (100 refresh periods at the default --refresh-ms).",
        ),
        log_level: str = typer.Option("warning", help="uvicorn log level."),
    ) -> None:
        """Serve forecasts for one engine (when no sub-command is given)."""
        if ctx.invoked_subcommand is not None:
            return
        if not engine:
            fail("give --engine URL (or a sub-command: bench, accuracy)")
        if routed_ttl_s <= 0:
            fail("--routed-ttl-s must be > 0")
        from block.profiles.profile import load_profile
        from block.sidecar.service import PredictorService
        from block.sidecar.service import serve as run

        try:
            prof = load_profile(profile) if profile else None
        except ValueError as e:
            fail(str(e))
        service = PredictorService(
            engine,
            prof,
            refresh_ms / 1e3,
            tracker_options={
                "default_output_tokens": default_output_tokens,
                "anticipate_arrivals": anticipate_arrivals,
                "forget_after_s": routed_ttl_s,
            },
            token=token,
        )
        auth = "token required" if token else "no token: open to anyone who can connect"
        typer.echo(f"block predictor: following {engine} at http://{host}:{port} ({auth})", err=True)
        run(service, host, port, log_level)

    @predictor_app.command("bench")
    def bench(
        running: int = typer.Option(64, help="Running requests in the snapshot."),
        waiting: int = typer.Option(16, help="Waiting requests in the snapshot."),
        prompt: int = typer.Option(512, help="Mean prompt tokens (and the candidate's)."),
        output: int = typer.Option(256, help="Mean output tokens (and the candidate's)."),
        profile: str = typer.Option("llama-2-7b-a30", help="Profile name or JSON path."),
        iterations: int = typer.Option(2000, help="Forecasts to time."),
        added_delay: str = typer.Option("none", help="none | horizon | full (the harm to others)."),
        cached_prefix: int = typer.Option(
            0,
            help="Prefix caching on, every prompt starting with the same TOKENS tokens (the candidate's "
            "hits them) and the free blocks full of cached ones; 0: caching off.",
            metavar="TOKENS",
        ),
        json_out: bool = typer.Option(False, "--json", help="Print only the JSON report."),
    ) -> None:
        """Time forecasts on a busy snapshot (mixed lengths, prefills in progress, KV nearly full)."""
        from block.predictor.bench import run_bench
        from block.profiles.profile import load_profile

        if added_delay not in ("none", "horizon", "full"):
            fail("--added-delay must be none, horizon or full")
        if cached_prefix < 0:
            fail("--cached-prefix must be >= 0")
        try:
            prof = load_profile(profile)
        except ValueError as e:
            fail(str(e))
        report = run_bench(
            prof,
            running,
            waiting,
            prompt,
            output,
            iterations,
            added_delay=added_delay,
            cached_prefix=cached_prefix,
        )
        if json_out:
            typer.echo(json.dumps(report))
            return
        for k, v in report.items():
            typer.echo(f"{k:>20}: {v}")

    @predictor_app.command("accuracy")
    def accuracy(
        instances: int = typer.Option(4, help="Emulated engines (subprocesses)."),
        qps: float = typer.Option(4.0, help="Requests per second in all (Poisson)."),
        num_requests: int = typer.Option(200, help="Requests to send."),
        profile: str = typer.Option("llama-2-7b-a30", help="Profile of the engines."),
        noise: float = typer.Option(0.03, help="Engines' relative step-time noise."),
        sample_rate: float = typer.Option(
            0.01, help="Share of requests forecast on and sent to every instance."
        ),
        max_output: int = typer.Option(512, help="Output tokens of one request at most (keeps runs short)."),
        seed: int = typer.Option(0),
        anticipate_arrivals: bool = typer.Option(
            False, "--anticipate-arrivals", help="Forecasts add arrivals expected at the recent routing rate."
        ),
        model_error: str = typer.Option(
            "none",
            help="KIND:E: the engines run at a true speed their profile does not say (see block engine).",
        ),
        calibration: bool = typer.Option(
            False, "--calibration", help="Correct each engine's profile online from its streamed tokens."
        ),
        dataset: str = typer.Option(
            "sharegpt", help="Workload spec (sharegpt-chat: multi-turn sessions, --qps starts sessions)."
        ),
        think_time: float = typer.Option(5.0, min=0.0, help="Session workloads: mean think time (s)."),
        json_out: bool = typer.Option(False, "--json", help="Print only the JSON report."),
    ) -> None:
        """Forecast error against emulated engines, and how often the forecast-best instance was best."""
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from block.sidecar.accuracy import run_accuracy

        if instances < 1 or qps <= 0 or num_requests < 1 or not 0 <= sample_rate <= 1:
            fail("need --instances >= 1, --qps > 0, --num-requests >= 1, 0 <= --sample-rate <= 1")
        from block.profiles.model_error import parse_model_error

        try:
            error = parse_model_error(model_error)
        except ValueError as e:
            fail(str(e))
        columns = (TextColumn("requests"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("requests", total=num_requests)
            try:
                report = run_accuracy(
                    instances, qps, num_requests, profile, noise, sample_rate, max_output, seed,
                    anticipate_arrivals=anticipate_arrivals, on_done=lambda: bar.advance(task),
                    model_error="" if error is None else str(error), calibration=calibration,
                    dataset=dataset, think_time_s=think_time,
                )  # fmt: skip
            except (RuntimeError, ValueError) as e:
                fail(str(e))
        if json_out:
            typer.echo(json.dumps(report))
            return
        for k, v in report.items():
            typer.echo(f"{k:>24}: {v}")

    app.add_typer(predictor_app, name="predictor")
