"""`python -m block.router ...` = `block router ...`, without loading the other command groups."""

from __future__ import annotations

import sys

import typer

from block.router.cli import register


def main() -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    register(app)
    app(["router", *sys.argv[1:]], prog_name="block")


if __name__ == "__main__":
    main()
