"""Labelled prompts for training and evaluating length models, from workload specs with real text."""

from __future__ import annotations

from block.workload import Sample, load_workload

# Only datasets whose prompts are real text: length-only traces get synthesised filler prompts, from
# which no length can be learnt.
TEXT_DATASETS = ("sharegpt", "jsonl:FILE")


def load_labelled(
    dataset: str, tokenizer: str = "llama3", max_model_len: int = 4096, min_prompt_tokens: int = 4
) -> list[Sample]:
    """Every sample of `dataset` (workload filters applied, original order, no sampling)."""
    kind = dataset.strip().partition(":")[0].lower()
    if kind not in ("sharegpt", "jsonl"):
        raise ValueError(
            f"dataset {dataset!r} has no prompt text to learn from; use {' or '.join(TEXT_DATASETS)}"
        )
    samples = load_workload(
        dataset, None, tokenizer=tokenizer, max_model_len=max_model_len, min_prompt_tokens=min_prompt_tokens
    )
    if not samples:
        raise ValueError(f"dataset {dataset!r} holds no usable sample")
    return samples
