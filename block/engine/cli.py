"""`block engine ...`: serve an emulated vLLM engine, or benchmark one against its profile."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import typer

from block.errors import fail

if TYPE_CHECKING:
    from block.engine.settings import EngineSettings


def register(app: typer.Typer) -> None:
    engine_app = typer.Typer(
        help="Emulated vLLM engine: the replica model in real time behind an OpenAI-compatible server.",
        no_args_is_help=False,
    )

    @engine_app.callback(invoke_without_command=True)
    def serve(
        ctx: typer.Context,
        profile: str = typer.Option("llama-2-7b-a100", help="Shipped profile name or a profile JSON path."),
        port: int = typer.Option(8001, min=1, max=65535, help="TCP port."),
        host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
        max_num_seqs: int | None = typer.Option(None, help="Sequences per step (default: the profile's)."),
        max_num_batched_tokens: int | None = typer.Option(
            None, help="Token budget per step (chunked prefill)."
        ),
        num_gpu_blocks: int | None = typer.Option(None, help="KV-cache blocks in all."),
        block_size: int | None = typer.Option(None, help="Tokens per KV-cache block."),
        max_model_len: int | None = typer.Option(None, help="Prompt + output tokens of a request at most."),
        noise: float = typer.Option(
            0.03, help="Relative spread of step times (0: exactly the profile mean)."
        ),
        seed: int | None = typer.Option(None, help="Seed for step noise and sampled output lengths."),
        model: str | None = typer.Option(None, help="Served model name (default: the profile's model)."),
        log_level: str = typer.Option("info", help="uvicorn log level."),
        prefix_caching: bool = typer.Option(
            True,
            "--prefix-caching/--no-prefix-caching",
            help="Automatic prefix caching, as vLLM V1 (on by default there too).",
        ),
        enable_prompt_tokens_details: bool = typer.Option(
            False,
            "--enable-prompt-tokens-details",
            help="Report usage.prompt_tokens_details.cached_tokens, as vLLM's flag of that name.",
        ),
        count: int = typer.Option(
            1, min=1, help="Engines in this process, on --port and the next ports (seeds --seed, +1, ...)."
        ),
        model_error: str = typer.Option(
            "none",
            help="KIND:E: run at a true speed the profile (still reported as is) does not know, E a "
            "fraction: static (a fixed factor in [1-E, 1+E] drawn from --seed), drift (wanders in that "
            "band over minutes), correlated (every engine of the host up to E slower for seconds).",
        ),
    ) -> None:
        """Serve an emulated engine (when no sub-command is given)."""
        if ctx.invoked_subcommand is not None:
            return
        from block.engine.server import serve as run_server

        settings = _settings(
            profile,
            noise,
            seed,
            model,
            model_error,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            num_gpu_blocks=num_gpu_blocks,
            block_size=block_size,
            max_model_len=max_model_len,
            enable_prefix_caching=prefix_caching,
        )
        if enable_prompt_tokens_details:
            settings = replace(settings, prompt_tokens_details=True)
        cfg = settings.config
        typer.echo(
            f"block engine: {settings.model_name} on profile {settings.profile.name} at http://{host}:{port} "
            f"(max_num_seqs {cfg.max_num_seqs}, max_num_batched_tokens {cfg.max_num_batched_tokens}, "
            f"{cfg.num_gpu_blocks} blocks of {cfg.block_size}, max_model_len {cfg.max_model_len}, "
            f"prefix caching {'on' if cfg.enable_prefix_caching else 'off'}, "
            f"noise {noise}{_model_error_note(settings)})",
            err=True,
        )
        if count > 1:
            from block.engine.server import serve_many

            base = settings.seed or 0
            serve_many([replace(settings, seed=base + i) for i in range(count)], host, port, log_level)
            return
        run_server(settings, host, port, log_level)

    @engine_app.command("bench")
    def bench(
        profile: str = typer.Option("llama-2-7b-a100", help="Shipped profile name or a profile JSON path."),
        json_out: bool = typer.Option(False, "--json", help="Print only the JSON report."),
        concurrency: list[int] = typer.Option([1, 8, 32], help="Concurrency levels (repeat the option)."),
        prompt_tokens: int = typer.Option(512, help="Prompt tokens of every request."),
        output_tokens: int = typer.Option(128, help="Output tokens of every request (ignore_eos)."),
        requests_per_client: int = typer.Option(3, help="Requests each concurrent client sends in turn."),
        min_requests: int = typer.Option(8, help="Requests per concurrency level at least (more rounds)."),
        tolerance: float = typer.Option(0.05, help="Largest relative error that passes."),
        strict: bool = typer.Option(False, help="Exit 1 when any error exceeds the tolerance."),
    ) -> None:
        """Measure TTFT and TPOT of a live emulator (noise 0) against a virtual-time replica."""
        from block.engine.bench import BenchSpec, print_report, run_bench

        spec = BenchSpec(
            profile=profile,
            concurrencies=tuple(concurrency),
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            requests_per_client=requests_per_client,
            min_requests=min_requests,
            tolerance=tolerance,
        )
        try:
            report = run_bench(spec, progress=not json_out)
        except (ValueError, RuntimeError) as e:
            fail(str(e))
            return
        print_report(report, json_only=json_out)
        if strict and not report["passed"]:
            raise typer.Exit(1)

    app.add_typer(engine_app, name="engine")


def _settings(
    profile: str,
    noise: float,
    seed: int | None,
    model: str | None,
    model_error: str = "none",
    **overrides: int | bool | None,
) -> EngineSettings:
    from block.engine.settings import EngineSettings, replica_config
    from block.profiles import load_profile
    from block.profiles.model_error import parse_model_error

    if noise < 0:
        fail("--noise must be >= 0")
    try:
        error = parse_model_error(model_error)
    except ValueError as e:
        fail(f"--model-error: {e}")
        raise  # unreachable: fail() exits
    try:
        prof = load_profile(profile)
        config = replica_config(prof, **overrides)
    except ValueError as e:
        fail(str(e))
        raise  # unreachable: fail() exits
    return EngineSettings(prof, config, noise=noise, seed=seed, model=model, model_error=error)


def _model_error_note(settings: EngineSettings) -> str:
    """For the start-up line (the operator's log, never an API): what the router is not told."""
    error = settings.model_error
    if error is None:
        return ""
    note = f", model error {error}"
    if error.kind == "static" and settings.seed is not None:
        note += f": x{error.speed(settings.seed)(0.0):.3f} the profile's speed"
    return note + ", not reported"
