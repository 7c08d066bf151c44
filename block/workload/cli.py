"""`block workload stats`: what a workload spec gives, as a prefix cache sees it."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from block.errors import fail


def stats(
    dataset: Annotated[str, typer.Argument(help="Workload spec (see `block bench --help`).")],
    num_requests: Annotated[
        int | None, typer.Option(min=1, help="Requests to draw (default: the whole dataset once).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the draw.")] = 0,
    tokenizer: Annotated[str, typer.Option(help="Tokenizer: llama3 | qwen3 | cl100k.")] = "llama3",
    max_model_len: Annotated[int, typer.Option(help="Drop requests with prompt + output above this.")] = 4096,
) -> None:
    """Requests, sessions, turns, and the shares of prompt tokens that are history and that a prefix cache
    could serve (JSON)."""
    from block.workload import load_workload
    from block.workload.stats import workload_stats

    try:
        samples = load_workload(dataset, num_requests, seed, tokenizer, max_model_len)
    except (ValueError, OSError) as e:
        fail(str(e))
    typer.echo(json.dumps({"dataset": dataset, **workload_stats(samples)}, indent=2))


def register(app: typer.Typer) -> None:
    workload_app = typer.Typer(help="Inspect workloads.", no_args_is_help=True)
    workload_app.command()(stats)
    app.add_typer(workload_app, name="workload")
