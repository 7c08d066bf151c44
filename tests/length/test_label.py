import asyncio
import json

import pytest

from block.errors import BlockError
from block.length.dataset import load_labelled
from block.length.label import choose_prompts, label_async
from tests.length.fake_engine import FakeEngine, answer_tokens


@pytest.mark.parametrize("stream", [False, True])
def test_label_records_the_engines_lengths(small_jsonl, tmp_path, stream):
    samples = choose_prompts(load_labelled(f"jsonl:{small_jsonl}"), 25, seed=1)
    out = tmp_path / "labels.jsonl"
    with FakeEngine() as engine:
        result = asyncio.run(
            label_async(engine.url, samples, out, max_tokens=40, concurrency=4, stream=stream)
        )
        sent = engine.requests
    assert result.written == 25 and result.failed == 0
    assert all("ignore_eos" not in r and r["model"] == "fake-model" for r in sent)  # free-length output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 25
    for row in rows:
        assert row["output_tokens"] == min(answer_tokens(row["prompt"]), 40)
    assert result.capped == sum(r["finish_reason"] == "length" for r in rows)
    # The file is a dataset the estimator can train on.
    again = load_labelled(f"jsonl:{out}")
    assert {s.prompt for s in again} <= {s.prompt for s in samples}


def test_label_unreachable_engine(tmp_path, small_jsonl):
    samples = load_labelled(f"jsonl:{small_jsonl}")[:2]
    with FakeEngine() as engine:
        url = engine.url
    with pytest.raises(BlockError):
        asyncio.run(label_async(url, samples, tmp_path / "x.jsonl", timeout_s=2))
