"""`block profile ...`: list the shipped step-time profiles, show one, refit them from Vidur's tables."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from block.errors import fail

DEFAULT_DATA_DIR = Path("../shared/data/vidur-profiling")
DEFAULT_OUT_DIR = Path("block/profiles/data")


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def _list(as_json: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    from block.profiles.profile import available_profiles, load_profile
    from block.profiles.summary import summarize

    summaries = [summarize(load_profile(name)) for name in available_profiles()]
    if as_json:
        typer.echo(json.dumps([s.to_dict() for s in summaries], indent=2))
        return
    table = Table(title="Shipped step-time profiles (decode: 1,024 context tokens per sequence)")
    table.add_column("name", no_wrap=True)
    for col in ("decode b=1 ms", "b=8", "b=48", "prefill 512 ms", "2048", "KV blocks"):
        table.add_column(col, justify="right")
    for s in summaries:
        decode = {r.batch: r.step_s for r in s.decode}
        prefill = {r.prompt_tokens: r.seconds for r in s.prefill}
        blocks = s.profile.engine_defaults.get("num_gpu_blocks")
        table.add_row(
            s.profile.name,
            _ms(decode[1]),
            _ms(decode[8]),
            _ms(decode[48]),
            _ms(prefill[512]),
            _ms(prefill[2048]),
            f"{blocks:,}" if blocks else "-",
        )
    Console().print(table)


def _show(name: str, context: int, as_json: bool) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from block.profiles.profile import load_profile
    from block.profiles.summary import summarize

    try:
        profile = load_profile(name)
    except ValueError as e:
        fail(str(e))
    s = summarize(profile, context)
    if as_json:
        typer.echo(json.dumps(s.to_dict(), indent=2))
        return
    console = Console()
    console.print(f"[bold]{escape(profile.name)}[/]: {escape(profile.model)} on {escape(profile.gpu)}")
    if profile.description:
        console.print(escape(profile.description))
    decode = Table(title=f"Decode step (every sequence holds {context} context tokens)")
    for col in ("batch", "step ms", "tokens/s"):
        decode.add_column(col, justify="right")
    for r in s.decode:
        decode.add_row(str(r.batch), _ms(r.step_s), f"{r.tokens_per_s:,.0f}")
    prefill = Table(title="Prefill of one prompt alone")
    for col in ("prompt tokens", "chunk", "ms"):
        prefill.add_column(col, justify="right")
    for r in s.prefill:
        prefill.add_row(f"{r.prompt_tokens:,}", f"{r.chunk:,}", _ms(r.seconds))
    console.print(decode, prefill)
    console.print(
        "[bold]engine defaults:[/] " + ", ".join(f"{k}={v}" for k, v in profile.engine_defaults.items())
    )
    for title, lines in (("sources", profile.sources), ("assumptions", profile.assumptions)):
        if lines:
            console.print(f"[bold]{title}:[/]")
            for line in lines:
                console.print(f"  - {escape(line)}", highlight=False)


def _fit_vidur(data_dir: Path, out: Path, max_knots: int) -> None:
    from rich.console import Console
    from rich.table import Table

    from block.profiles.fit_vidur import fit_all

    try:
        results = fit_all(data_dir, out, max_knots=max_knots)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    table = Table(title=f"Profiles written to {out}")
    for col in ("name", "knots", "max rel. error", "RMS rel. error", "worst at tokens"):
        table.add_column(col, justify="left" if col == "name" else "right")
    for r in results:
        if r.fit is None:
            how = "derived" if r.profile.sources else "synthetic"
            table.add_row(r.profile.name, str(len(r.profile.linear_knots_tokens)), how, how, "-")
        else:
            f = r.fit
            table.add_row(
                r.profile.name,
                str(len(f.tokens)),
                f"{f.max_rel_error:.1%}",
                f"{f.rms_rel_error:.1%}",
                str(f.worst_tokens),
            )
    Console().print(table)


def register(app: typer.Typer) -> None:
    profile_app = typer.Typer(
        help="Step-time profiles: how long one engine step takes for a model, GPU and batch.",
        no_args_is_help=True,
    )

    @profile_app.command("list")
    def list_cmd(
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    ) -> None:
        """List the shipped profiles with their headline numbers."""
        _list(as_json)

    @profile_app.command("show")
    def show_cmd(
        name: str = typer.Argument(..., help="Profile name (see `block profile list`) or a .json path."),
        context: int = typer.Option(1024, min=1, help="Context tokens per decoding sequence."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    ) -> None:
        """Decode step time at batch 1, 8, 32, 48 and the time to prefill 512 and 2,048 tokens."""
        _show(name, context, as_json)

    @profile_app.command("fit-vidur")
    def fit_vidur_cmd(
        data_dir: Path = typer.Option(
            DEFAULT_DATA_DIR, help="Vidur profiling data: <gpu>/meta-llama/<model>/mlp.csv"
        ),
        out: Path = typer.Option(DEFAULT_OUT_DIR, help="Where to write the profile JSONs."),
        max_knots: int = typer.Option(16, min=2, help="Knots of the piecewise-linear linear-layer fit."),
    ) -> None:
        """Refit every shipped profile from Vidur's measured tables (reproducible, deterministic)."""
        _fit_vidur(data_dir, out, max_knots)

    # `block profile fit --url URL` (probes of a live engine) is added by block/realengine/cli.py, which
    # sits above this package and registers after it.
    app.add_typer(profile_app, name="profile")
