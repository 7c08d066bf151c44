"""User-facing failures: one line on the terminal, never a traceback."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

_stderr = Console(stderr=True, highlight=False, emoji=False)  # ":a:" in a message is no emoji


class BlockError(Exception):
    """An error whose message is meant for the user as is."""


def fail(message: str, code: int = 2) -> None:
    """Print `error: message` to stderr and exit with `code`."""
    _stderr.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)  # "[:port]" is no markup
    raise typer.Exit(code)
