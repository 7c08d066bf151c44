"""`block engine` is registered as a typer group with a `bench` sub-command."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from block.engine.cli import register


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_help_lists_the_flags_and_bench() -> None:
    result = CliRunner().invoke(_app(), ["engine", "--help"], env={"COLUMNS": "200"})  # no wrapped names
    assert result.exit_code == 0
    for flag in (
        "--profile",
        "--port",
        "--host",
        "--max-num-seqs",
        "--max-num-batched-tokens",
        "--num-gpu-blocks",
        "--block-size",
        "--max-model-len",
        "--noise",
        "--seed",
        "--model",
        "--prefix-caching",
        "--no-prefix-caching",
        "--enable-prompt-tokens-details",
        "bench",
    ):
        assert flag in result.output, flag
    assert CliRunner().invoke(_app(), ["engine", "bench", "--help"]).exit_code == 0


def test_unknown_profile_is_a_one_line_error() -> None:
    result = CliRunner().invoke(_app(), ["engine", "--profile", "no-such-profile"])
    assert result.exit_code == 2 and "unknown profile" in result.output
