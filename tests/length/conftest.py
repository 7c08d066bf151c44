"""Shared fixtures: a small real training set and one quickly fitted model for the whole session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from block.length.dataset import load_labelled
from block.length.split import split
from block.length.train import fit_estimator


@pytest.fixture(scope="session")
def sharegpt_split():
    train, held = split(load_labelled("sharegpt"), seed=0)
    return train, held


@pytest.fixture(scope="session")
def small_model(sharegpt_split):
    train, _ = sharegpt_split
    # Few samples and few boosting rounds: seconds, enough to exercise every code path.
    return fit_estimator(train[:400], seed=0, tree_iters=15)


@pytest.fixture(scope="session")
def small_jsonl(tmp_path_factory, sharegpt_split) -> Path:
    """A labelled JSONL dataset (the format `block length label` writes) of 150 ShareGPT prompts."""
    train, held = sharegpt_split
    path = tmp_path_factory.mktemp("length") / "labels.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for s in train[:120] + held[:30]:
            row = {"prompt": s.prompt, "prompt_tokens": s.prompt_tokens, "output_tokens": s.output_tokens}
            f.write(json.dumps(row) + "\n")
    return path
