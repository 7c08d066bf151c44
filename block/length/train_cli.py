"""Training with a rich progress bar (shared by `block length train` and first-use training)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from block.length.dataset import load_labelled
from block.length.estimator import LengthEstimator
from block.length.split import HELD_OUT_FRACTION, split
from block.length.train import fit_estimator, training_steps

if TYPE_CHECKING:
    from block.length.finetune import FinetuneArgs


def train_with_progress(
    dataset: str,
    model: str = "tfidf",
    seed: int = 0,
    tokenizer: str = "llama3",
    max_model_len: int = 4096,
    title: str = "training length model",
    finetune: FinetuneArgs | None = None,
) -> LengthEstimator:
    """Load `dataset`, keep its held-out split aside, fit on the rest, showing progress on stderr."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    samples = load_labelled(dataset, tokenizer, max_model_len)
    train, held = split(samples, seed)
    meta = {
        "dataset": dataset,
        "held_out_fraction": HELD_OUT_FRACTION,
        "n_held_out": len(held),
        "max_model_len": max_model_len,
    }
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    if model in ("finetune", "tfidf+finetune"):
        return _finetune_with_progress(train, finetune, seed, tokenizer, meta, title, columns)
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"{title}: intent features", total=training_steps(model))
        embed_task = None

        def tick(desc: str) -> None:
            bar.update(task, advance=1, description=f"{title}: {desc}")

        def embedded(done: int, total: int) -> None:
            # A second bar, in prompts: embedding the training set is the one long step (minutes).
            nonlocal embed_task
            if embed_task is None:
                embed_task = bar.add_task("embedding prompts (MiniLM)", total=total)
            bar.update(embed_task, completed=done)

        return fit_estimator(
            train, model, seed, tokenizer=tokenizer, progress=tick, meta=meta, embed_progress=embedded
        )


def _finetune_with_progress(train, args, seed, tokenizer, meta, title, columns) -> LengthEstimator:
    """Fine-tuning has no known step count (early stopping, time bound): a spinner and the last event."""
    from rich.console import Console
    from rich.progress import Progress

    from block.length.finetune import FinetuneArgs, fit_finetuned

    with Progress(*columns[:2], columns[-1], console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"{title}: fine-tuning the encoder", total=None)

        def tick(desc: str) -> None:
            bar.update(task, description=f"{title}: {desc}")
            # Kept as a line with its time: the run's validation history (the spinner shows only the last).
            bar.console.log(desc)

        args = args or FinetuneArgs()
        return fit_finetuned(train, args, seed, tokenizer=tokenizer, progress=tick, meta=meta)
