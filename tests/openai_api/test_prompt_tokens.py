"""One prompt count for the router and the engine: what the router plans with is what the engine
(and vLLM) will hold, for text prompts, token ids and chats alike."""

from __future__ import annotations

import pytest

from block.engine.openai_protocol import parse_generation
from block.router.config import RouterConfig
from block.router.request_shape import CHAT_PATH, parse_shape
from block.workload import get_tokenizer

CHAT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "image_url"}]},
        {"role": "assistant", "content": None},
        {"role": "user", "content": "What is a KV cache?"},
    ]
}
BODIES = [
    ("/v1/completions", {"prompt": "Hello world, how are you today?"}),
    ("/v1/completions", {"prompt": ["one prompt in a batch"]}),
    ("/v1/completions", {"prompt": [11, 22, 33]}),
    ("/v1/completions", {"prompt": [[11, 22]]}),
    (CHAT_PATH, {"messages": [{"role": "user", "content": "hi"}]}),
    (CHAT_PATH, CHAT),
]


@pytest.mark.parametrize(("path", "body"), BODIES)
def test_router_and_engine_count_the_same_prompt(path: str, body: dict) -> None:
    count = get_tokenizer(RouterConfig().tokenizer).count  # the router's default tokenizer
    routed = parse_shape(path, body, count, None, 100).prompt_tokens
    served = parse_generation("chat" if path == CHAT_PATH else "completion", body, {}).prompt_tokens
    assert routed == served


def test_a_text_prompt_counts_its_begin_of_text_token() -> None:
    count = get_tokenizer("llama3").count
    shape = parse_shape("/v1/completions", {"prompt": "Hello world"}, count, None, 100)
    assert shape.prompt_tokens == count("Hello world") + 1
