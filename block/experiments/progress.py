"""A progress bar over an experiment's runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from block.experiments.plan import Runner, RunOutput, RunSpec


def run_all(runner: Runner, specs: Sequence[RunSpec], out_dir: Path, console: Console) -> list[RunOutput]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"{runner.mode}: {len(specs)} runs", total=len(specs))

        def done(o: RunOutput) -> None:
            progress.update(task, advance=1, description=f"{runner.mode}: {o.spec.name}")

        return runner.run(specs, out_dir, done)
