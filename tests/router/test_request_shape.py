"""Expected-length rules and prompt counting."""

from __future__ import annotations

import pytest

from block.openai_api.errors import RequestError
from block.router.request_shape import expected_output_tokens, parse_shape
from tests.router.servers import count_words


def shape(body: object, path: str = "/v1/completions", estimate=None, default: int = 100):  # noqa: ANN001, ANN201
    return parse_shape(path, body, count_words, estimate, default)


def test_ignore_eos_fixes_the_length() -> None:
    assert (
        shape(
            {"prompt": "a b c", "max_tokens": 40, "ignore_eos": True}, estimate=lambda t, n: 7
        ).expected_output_tokens
        == 40
    )


def test_estimator_capped_by_max_tokens() -> None:
    assert shape({"prompt": "a", "max_tokens": 40}, estimate=lambda t, n: 7).expected_output_tokens == 7
    assert shape({"prompt": "a", "max_tokens": 5}, estimate=lambda t, n: 70).expected_output_tokens == 5
    assert shape({"prompt": "a"}, estimate=lambda t, n: 70).expected_output_tokens == 70


def test_default_without_estimator_capped() -> None:
    assert shape({"prompt": "a"}).expected_output_tokens == 100
    assert shape({"prompt": "a", "max_tokens": 9}).expected_output_tokens == 9
    assert expected_output_tokens(None, True, None, None, 256) == 256  # ignore_eos alone fixes nothing


def test_token_id_prompts_count_by_length_and_skip_estimator() -> None:
    s = shape({"prompt": [1, 2, 3, 4]}, estimate=lambda t, n: 7)
    assert s.prompt_tokens == 4 and s.expected_output_tokens == 100 and s.prompt_text is None
    assert shape({"prompt": [[1, 2], [3]]}).prompt_tokens == 3
    # each text prompt counts its <|begin_of_text|>, as the engine (and vLLM) count it
    assert shape({"prompt": "a b"}).prompt_tokens == 1 + 2
    assert shape({"prompt": ["a b", "c"]}).prompt_tokens == (1 + 2) + (1 + 1)


def test_chat_uses_the_engine_template_count() -> None:
    s = shape(
        {"messages": [{"role": "user", "content": "a b c"}], "max_completion_tokens": 8},
        "/v1/chat/completions",
    )
    assert s.prompt_tokens == 1 + 4 + (4 + 1 + 3)
    assert s.max_tokens == 8
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "x y"}]}]}
    assert shape(parts, "/v1/chat/completions").prompt_tokens == 1 + 4 + 4 + 1 + 2


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"max_tokens": 3},
        {"prompt": 3},
        {"prompt": "a", "max_tokens": -1},
        {"prompt": "a", "max_tokens": "x"},
        {"prompt": [1, "a"]},
    ],
)
def test_bad_completion_bodies(body: object) -> None:
    with pytest.raises(RequestError):
        shape(body)


def test_bad_chat_bodies() -> None:
    for body in ({"messages": []}, {"messages": "hi"}, {"messages": [3]}, {"messages": [{"content": 5}]}):
        with pytest.raises(RequestError):
            shape(body, "/v1/chat/completions")
