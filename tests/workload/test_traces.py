"""Parsing of every length-only trace format, from the small fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from block.workload import load_workload
from block.workload.traces import read_arxiv, read_azure, read_burstgpt, read_jsonl

FIXTURES = Path(__file__).parent.parent / "fixtures"


def test_arxiv_rows() -> None:
    rows = read_arxiv(FIXTURES / "arxiv_stats_small.csv")
    assert [(r.prompt_tokens, r.output_tokens) for r in rows][:3] == [(3772, 54), (2015, 156), (1200, 300)]
    assert all(r.arrival_s is None and r.prompt is None for r in rows)


def test_burstgpt_rows_are_rebased_arrivals() -> None:
    rows = read_burstgpt(FIXTURES / "burstgpt_small.csv")
    assert [r.arrival_s for r in rows] == [0.0, 1.5, 2.0, 4.25, 7.0]
    assert (rows[0].prompt_tokens, rows[0].output_tokens) == (472, 18)


def test_azure_rows_parse_seven_digit_fractions() -> None:
    rows = read_azure(FIXTURES / "azure_llm_small.csv")
    assert rows[0].arrival_s == 0.0
    assert rows[1].arrival_s == pytest.approx(50.9951690 - 46.6805900, abs=1e-6)
    assert (rows[2].prompt_tokens, rows[2].output_tokens) == (879, 20)


def test_jsonl_text_or_counts() -> None:
    rows = read_jsonl(FIXTURES / "workload_small.jsonl")
    assert len(rows) == 4  # the blank line is skipped
    assert rows[0].prompt is not None and rows[0].prompt_tokens > 4
    assert (rows[1].prompt_tokens, rows[1].output_tokens, rows[1].prompt) == (64, 32, None)


def test_jsonl_timestamps_sorted_and_rebased() -> None:
    rows = read_jsonl(FIXTURES / "workload_timed.jsonl")
    assert [(r.prompt_tokens, r.arrival_s) for r in rows] == [(60, 0.0), (50, 0.5), (70, 2.0)]


def test_bad_csv_names_the_missing_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="missing column"):
        read_burstgpt(bad)


@pytest.mark.parametrize(
    ("spec", "expected_lengths"),
    [
        # 5000+100 and 4000+200 exceed 4096; 3 tokens is under the minimum; 0 outputs are dropped.
        ("arxiv:{}/arxiv_stats_small.csv", {(3772, 54), (2015, 156), (1200, 300)}),
        ("burstgpt:{}/burstgpt_small.csv", {(472, 18), (200, 300), (31, 96)}),
        ("azure:{}/azure_llm_small.csv", {(374, 44), (396, 109), (879, 20)}),
    ],
)
def test_load_workload_filters_and_synthesises(spec: str, expected_lengths: set) -> None:
    from block.workload import get_tokenizer

    samples = load_workload(spec.format(FIXTURES))
    assert {(s.prompt_tokens, s.output_tokens) for s in samples} == expected_lengths
    tok = get_tokenizer("llama3")
    assert all(tok.count(s.prompt) == s.prompt_tokens for s in samples)


def test_timed_trace_keeps_order_and_repeats() -> None:
    samples = load_workload(f"burstgpt:{FIXTURES}/burstgpt_small.csv", num_requests=7)
    arrivals = [s.arrival_s for s in samples]
    assert arrivals[:3] == [0.0, 2.0, 4.25]
    assert arrivals == sorted(arrivals) and len(samples) == 7


def test_jsonl_keeps_given_prompt_text() -> None:
    samples = load_workload(f"jsonl:{FIXTURES}/workload_small.jsonl")
    assert samples[0].prompt.startswith("Explain the theory")
    assert len(samples) == 3  # 10 + 5000 > 4096 is filtered out
