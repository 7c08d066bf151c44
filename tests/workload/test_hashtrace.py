"""hashtrace: token-free traces with prefix block ids, replayed as prompts that repeat where the ids do."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from block.prefix import PREFIX_BLOCK_SIZE, chain_hashes
from block.workload import get_tokenizer, load_workload
from block.workload.hashtrace import TRACE_BLOCK_TOKENS, BlockText, read_hashtrace

FIXTURE = Path(__file__).parent.parent / "fixtures" / "hashtrace_small.jsonl"
ENGINE_BLOCKS = TRACE_BLOCK_TOKENS // PREFIX_BLOCK_SIZE  # 32 engine blocks per trace block


@pytest.fixture(scope="module")
def trace() -> list:
    return load_workload(f"hashtrace:{FIXTURE}", None)


def test_requests_keep_lengths_and_time_and_long_ones_are_dropped(trace, caplog) -> None:  # noqa: ANN001
    rows = read_hashtrace(FIXTURE)
    kept = [r for r in rows if r.input_length + r.output_length <= 4096]
    assert len(rows) == 10 and len(kept) == 9
    assert [s.prompt_tokens for s in trace] == [r.input_length for r in kept]
    assert [s.output_tokens for s in trace] == [r.output_length for r in kept]
    assert trace[0].arrival_s == 0 and trace[1].arrival_s == pytest.approx(0.15)
    with caplog.at_level(logging.WARNING):
        load_workload(f"hashtrace:{FIXTURE}", None)
    assert "dropped 1 of 10" in caplog.text


def test_prompts_tokenize_to_the_blocks_that_carry_the_ids(trace) -> None:  # noqa: ANN001
    tok = get_tokenizer()
    for s in trace:
        ids = tok.encode(s.prompt)
        assert len(ids) == s.prompt_tokens  # a live engine counts what the trace says
        assert chain_hashes(ids) == s.prefix_hashes  # and hashes what the simulator hashes


def test_equal_ids_give_equal_engine_blocks_and_only_those(trace) -> None:  # noqa: ANN001
    rows = [r for r in read_hashtrace(FIXTURE) if r.input_length + r.output_length <= 4096]
    for a, ra in zip(trace, rows, strict=True):
        for b, rb in zip(trace, rows, strict=True):
            common_ids = 0
            while (
                common_ids < min(len(ra.hash_ids), len(rb.hash_ids))
                and ra.hash_ids[common_ids] == rb.hash_ids[common_ids]
            ):
                common_ids += 1
            common_blocks = 0
            while (
                common_blocks < min(len(a.prefix_hashes), len(b.prefix_hashes))
                and a.prefix_hashes[common_blocks] == b.prefix_hashes[common_blocks]
            ):
                common_blocks += 1
            # Shared trace blocks are shared engine blocks (up to the shorter prompt's full blocks) ...
            full = min(len(a.prefix_hashes), len(b.prefix_hashes))
            assert common_blocks >= min(common_ids * ENGINE_BLOCKS, full)
            # ... and a differing trace block shares nothing from there on.
            if a is not b and common_ids < min(len(ra.hash_ids), len(rb.hash_ids)):
                assert common_blocks <= common_ids * ENGINE_BLOCKS


def test_a_block_tokenizes_alone_as_in_any_context() -> None:
    text = BlockText("llama3")
    tok = get_tokenizer()
    for hash_id in (0, 7, 123456789, -5):
        words = text.block(0, hash_id)
        alone = "".join(text.words[w] for w in words)
        assert tok.encode(alone) == text.token_ids[words].tolist()
        before = "".join(text.words[w] for w in text.block(0, hash_id + 1))
        assert tok.encode(before + alone)[TRACE_BLOCK_TOKENS:] == tok.encode(alone)


def test_a_replayed_trace_shares_within_its_round_but_not_across_rounds(trace) -> None:  # noqa: ANN001
    twice = load_workload(f"hashtrace:{FIXTURE}", 2 * len(trace))
    first, second = twice[: len(trace)], twice[len(trace) :]
    assert [s.prefix_hashes for s in first] == [s.prefix_hashes for s in trace]
    assert second[0].arrival_s > first[-1].arrival_s
    heads = {s.prefix_hashes[0] for s in first}
    assert not heads & {s.prefix_hashes[0] for s in second}
    # Requests 0 and 3 share ids [0, 1, 2] in the trace: they share blocks in both rounds.
    assert first[0].prefix_hashes[:64] == first[3].prefix_hashes[:64]
    assert second[0].prefix_hashes[:64] == second[3].prefix_hashes[:64]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"timestamp": 0, "input_length": 10, "output_length": 2}, "missing field(s) hash_ids"),
        ({"timestamp": 0, "input_length": 10, "hash_ids": [1]}, "missing field(s) output_length"),
        ({"timestamp": 0, "input_length": 10, "output_length": 2, "hash_ids": [1, "x"]}, "list of integers"),
        ({"timestamp": 0, "input_length": 10, "output_length": 2, "hash_ids": [1.5]}, "list of integers"),
        ({"timestamp": 0, "input_length": "10", "output_length": 2, "hash_ids": [1]}, "integers >= 0"),
        ({"timestamp": "now", "input_length": 10, "output_length": 2, "hash_ids": [1]}, "timestamp"),
    ],
)
def test_a_bad_line_is_an_error_naming_it(tmp_path: Path, line: dict, message: str) -> None:
    good = {"timestamp": 0, "input_length": 10, "output_length": 2, "hash_ids": [1]}
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(line) + "\n")
    with pytest.raises(ValueError, match=f"t.jsonl:3: .*{message.replace('(', '.').replace(')', '.')}"):
        load_workload(f"hashtrace:{path}", None)


def test_not_json_is_an_error_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"timestamp": 0,\n')
    with pytest.raises(ValueError, match="t.jsonl:1: not JSON"):
        load_workload(f"hashtrace:{path}", None)


def test_the_cli_reports_a_bad_line_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from block.cli import app

    path = tmp_path / "bad.jsonl"
    path.write_text('{"timestamp": 0, "input_length": 10, "hash_ids": [1]}\n')
    runner = CliRunner()
    for args in (
        ["bench", "--url", "http://127.0.0.1:9", "--dataset", f"hashtrace:{path}"],
        ["simulate", "--dataset", f"hashtrace:{path}", "--qps", "1", "--out", str(tmp_path / "sim")],
    ):
        result = runner.invoke(app, args, env={"COLUMNS": "400"})
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        assert "bad.jsonl:1: missing field(s) output_length" in result.output


def test_workload_stats_command_reads_the_trace() -> None:
    from typer.testing import CliRunner

    from block.cli import app

    result = CliRunner().invoke(app, ["workload", "stats", f"hashtrace:{FIXTURE}"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output[result.output.index("{") : result.output.rindex("}") + 1])
    assert stats["requests"] == 9 and stats["with_prefix_hashes"] == 9 and 0.3 < stats["reusable_share"] < 0.7
