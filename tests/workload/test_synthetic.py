"""Synthetic workloads, spec errors and exact-token prompt synthesis."""

from __future__ import annotations

import numpy as np
import pytest

from block.workload import get_tokenizer, load_workload
from block.workload.synthesis import synthesize_prompts


@pytest.mark.parametrize("tokenizer", ["llama3", "qwen3", "cl100k"])
def test_synthesised_prompts_have_exact_token_counts(tokenizer: str) -> None:
    lengths = np.random.default_rng(3).integers(1, 2000, size=200)
    prompts = synthesize_prompts(lengths, seed=1, tokenizer=tokenizer)
    tok = get_tokenizer(tokenizer)
    assert [tok.count(p) for p in prompts] == lengths.tolist()
    assert len(set(prompts)) == len(prompts)  # random words, so no shared prompts


def test_synthesis_is_reproducible() -> None:
    assert synthesize_prompts([50, 60], seed=7) == synthesize_prompts([50, 60], seed=7)
    assert synthesize_prompts([50], seed=7) != synthesize_prompts([50], seed=8)


def test_fixed() -> None:
    samples = load_workload("fixed:128:16", num_requests=5)
    assert [(s.prompt_tokens, s.output_tokens) for s in samples] == [(128, 16)] * 5


def test_uniform_within_bounds_and_filters() -> None:
    samples = load_workload("uniform:1-3000:1-2000", num_requests=500, max_model_len=3000)
    p = np.array([s.prompt_tokens for s in samples])
    o = np.array([s.output_tokens for s in samples])
    assert len(samples) == 500
    assert p.min() >= 4 and o.min() >= 1 and (p + o).max() <= 3000


def test_zipf_is_skewed_and_bounded() -> None:
    samples = load_workload("zipf:1.2:1000:200", num_requests=2000, seed=1)
    p = np.array([s.prompt_tokens for s in samples])
    o = np.array([s.output_tokens for s in samples])
    assert p.min() >= 4 and p.max() <= 1000 and o.max() <= 200
    assert np.median(p) < p.mean()  # heavy right tail


def test_default_synthetic_count() -> None:
    assert len(load_workload("fixed:8:1")) == 1000


@pytest.mark.parametrize(
    "spec",
    ["nope", "fixed:1", "fixed:a:b", "uniform:9-3:1-2", "zipf:0:10:10", "zipf:1:2", "arxiv:", "sharegpt:x"],
)
def test_bad_specs_raise_one_line_value_errors(spec: str) -> None:
    with pytest.raises(ValueError) as info:
        load_workload(spec)
    assert "\n" not in str(info.value)


def test_missing_file() -> None:
    with pytest.raises(ValueError, match="no such file"):
        load_workload("azure:/does/not/exist.csv")


def test_unsatisfiable_filter() -> None:
    with pytest.raises(ValueError, match="pass the filters"):
        load_workload("fixed:4000:200", num_requests=3)
