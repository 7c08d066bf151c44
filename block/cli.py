"""The `block` command. Each area of the project contributes its own sub-commands.

Every `block/<area>/cli.py` module listed in COMMAND_MODULES defines `register(app)`, which adds its
commands to the root app. Heavy imports stay inside command functions so `block --help` is fast.
"""

from __future__ import annotations

import importlib
import signal
import sys
from types import FrameType

import typer

app = typer.Typer(
    name="block",
    help="Block: a predictive load balancer for LLM serving fleets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

COMMAND_MODULES = [
    "block.demo",
    "block.length.cli",
    "block.profiles.cli",
    "block.engine.cli",
    "block.sidecar.cli",
    "block.bench.cli",
    "block.workload.cli",
    "block.router.cli",
    "block.sim.cli",
    "block.experiments.cli",
    "block.realengine.cli",
]


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register_all()


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    # SIGTERM (a job's timeout, `kill`) unwinds like Ctrl-C: every `finally` and `with` runs, so servers a
    # command started (vLLM engines, emulators, routers) are stopped with it instead of left orphaned.
    # Servers (uvicorn) install their own handler when they run, for their graceful drain.
    sys.exit(128 + signum)


def main() -> None:  # pragma: no cover - console entry point
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    app()
