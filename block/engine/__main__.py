"""`python -m block.engine ...` = `block engine ...`, without loading the other command groups."""

from __future__ import annotations

import sys

import typer

from block.engine.cli import register


def main() -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    register(app)
    app(["engine", *sys.argv[1:]], prog_name="block")


if __name__ == "__main__":
    main()
