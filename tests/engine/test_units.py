"""The pieces of the emulator that need no server."""

from __future__ import annotations

import statistics

import orjson
import pytest

from block.engine import prompt_tokens, synthetic_text
from block.engine.bench import predict
from block.engine.openai_protocol import RequestError, parse_generation
from block.engine.output_lengths import OutputLengthSampler
from block.engine.responses import ChunkWriter
from block.engine.settings import replica_config
from block.replica import Replica, Request
from tests.conftest import make_test_profile


def test_sampled_lengths_look_like_sharegpt_and_are_reproducible() -> None:
    s = OutputLengthSampler(seed=3)
    draws = [s.draw() for _ in range(20_000)]
    assert 240 < statistics.fmean(draws) < 320  # lognormal(5.14, 0.99): mean 280
    assert 150 < statistics.median(draws) < 195  # median 171
    again = OutputLengthSampler(seed=3)
    assert [again.draw() for _ in range(100)] == draws[:100]
    # with a request id the draw depends on (seed, id) only, not on the order of arrival
    a, b = OutputLengthSampler(seed=3), OutputLengthSampler(seed=3)
    a.draw()
    assert a.draw("req-1") == b.draw("req-1")


def test_sampled_length_is_capped() -> None:
    s = OutputLengthSampler(seed=1)
    for _ in range(200):
        n, capped = s.length(20)
        assert 1 <= n <= 20 and capped == (n == 20)
    assert s.length(50, min_tokens=40)[0] >= 40


def test_chat_template_count() -> None:
    hi = prompt_tokens.count_text("hi")
    # <|begin_of_text|> + (4 + role + content) per message + 4 for the generation prompt
    assert prompt_tokens.count_chat([("user", "hi")]) == 1 + 4 + 1 + hi + 4
    assert prompt_tokens.message_text([{"type": "text", "text": "a"}, {"type": "image_url"}]) == "a"
    assert prompt_tokens.message_text(5) is None


def test_parse_accepts_the_prompt_shapes() -> None:
    h: dict[str, str] = {}
    text = parse_generation("completion", {"prompt": "Hello world"}, h)
    assert text.prompt_tokens == prompt_tokens.count_text("Hello world") + 1  # + <|begin_of_text|>
    assert parse_generation("completion", {"prompt": [1, 2, 3]}, h).prompt_tokens == 3
    assert parse_generation("completion", {"prompt": [[1, 2]]}, h).prompt_tokens == 2
    assert parse_generation("completion", {"prompt": ["x"]}, h).prompt_tokens == 2
    p = parse_generation(
        "chat", {"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 9}, h
    )
    assert p.max_tokens == 9
    p = parse_generation("completion", {"prompt": [1], "expected_output_tokens": 5}, h)
    assert p.expected_output_tokens == 5
    p = parse_generation("completion", {"prompt": [1]}, {"x-block-expected-output-tokens": "6"})
    assert p.expected_output_tokens == 6


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": [1, "a"]}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "x", "max_tokens": True}, "max_tokens"),
        ({"prompt": "x", "max_tokens": 1.5}, "max_tokens"),
        ({"prompt": "x", "n": 2}, "n"),
        ({"prompt": "x", "stream": "yes"}, "stream"),
        ({"prompt": "x", "stream_options": {"include_usage": True}}, "stream_options"),
        ({"prompt": "x", "expected_output_tokens": -3}, "expected_output_tokens"),
    ],
)
def test_parse_refuses_bad_input(body: dict, param: str) -> None:
    with pytest.raises(RequestError) as e:
        parse_generation("completion", body, {})
    assert e.value.param == param and e.value.status == 400


def test_stream_chunks_are_valid_json() -> None:
    for kind in ("completion", "chat"):
        w = ChunkWriter(kind, "id-1", 123, 'model "quoted"')
        chunk = orjson.loads(w.token(0, "length")[6:])
        assert chunk["id"] == "id-1" and chunk["model"] == 'model "quoted"'
        assert chunk["choices"][0]["finish_reason"] == "length"
        assert orjson.loads(w.usage(3, 4)[6:])["usage"] == {
            "prompt_tokens": 3,
            "total_tokens": 7,
            "completion_tokens": 4,
        }
    assert synthetic_text.text_of(3) == "".join(synthetic_text.token_text(i) for i in range(3))
    assert synthetic_text.text_of(100) == "".join(synthetic_text.token_text(i) for i in range(100))


def test_bench_prediction_is_the_replica_in_virtual_time() -> None:
    profile = make_test_profile()
    config = replica_config(profile)
    [(ttft, tpot)] = predict(profile, config, [0.0], prompt_tokens=100, output_tokens=5)
    r = Replica(config, profile)
    req = Request("a", 100, 5)
    r.add(req)
    while r.step() is not None:
        pass
    assert ttft == pytest.approx(req.first_token_time)
    assert tpot == pytest.approx((req.finish_time - req.first_token_time) / 4)
    # a second request arriving during the first one's prefill waits for the next step
    both = predict(profile, config, [0.0, 0.001], prompt_tokens=30, output_tokens=3)
    assert both[1][0] > both[0][0] - 0.001
