"""ShareGPT: truncated-file parsing, first-turn semantics, size and filters."""

from __future__ import annotations

import json

import numpy as np
import pytest

from block.workload import load_sharegpt, load_workload
from block.workload.sharegpt import first_turn, parse_conversations


def test_parse_keeps_complete_elements_of_a_truncated_array() -> None:
    items = [{"id": str(i), "conversations": []} for i in range(3)]
    text = json.dumps(items)
    assert parse_conversations(text) == items
    assert parse_conversations(text[: len(text) - 10]) == items[:2]
    assert parse_conversations("") == []


def test_first_turn_is_first_human_then_first_answer_after_it() -> None:
    conv = {
        "conversations": [
            {"from": "gpt", "value": "stray answer"},
            {"from": "human", "value": "question"},
            {"from": "human", "value": "again"},
            {"from": "gpt", "value": "answer"},
            {"from": "gpt", "value": "later"},
        ]
    }
    assert first_turn(conv) == ("question", "answer")
    assert first_turn({"conversations": [{"from": "human", "value": "q"}]}) is None
    assert first_turn({"conversations": []}) is None


@pytest.fixture(scope="module")
def sharegpt() -> list:
    return load_sharegpt("llama3")


def test_sharegpt_size_and_counts(sharegpt: list) -> None:
    assert 17_000 <= len(sharegpt) <= 17_700
    assert load_sharegpt("llama3") is sharegpt  # cached in-process
    s = next(x for x in sharegpt if x.prompt_tokens > 10)
    assert s.reference_output is not None and s.arrival_s is None


def test_sharegpt_filters_and_seeded_sampling(sharegpt: list) -> None:
    a = load_workload("sharegpt", num_requests=2000, seed=1, max_model_len=2048)
    b = load_workload("sharegpt", num_requests=2000, seed=1, max_model_len=2048)
    assert a == b
    assert load_workload("sharegpt", num_requests=50, seed=2) != a[:50]
    p = np.array([s.prompt_tokens for s in a])
    o = np.array([s.output_tokens for s in a])
    assert p.min() >= 4 and o.min() >= 1 and (p + o).max() <= 2048
    assert len({s.prompt for s in a}) > 1900  # without replacement (a few prompts are duplicated)


def test_sharegpt_all_filtered(sharegpt: list) -> None:
    everything = load_workload("sharegpt")
    assert 15_000 < len(everything) < len(sharegpt)
