"""A prompt's token ids, laid out from one tokenization: as many as the count the router and the engine
plan with, and the same leading ids for prompts that share a leading part (their prefix identity)."""

from __future__ import annotations

import pytest

from block.openai_api.prompt_tokens import (
    BEGIN_OF_TEXT_ID,
    EOT_ID,
    START_HEADER_ID,
    Llama3Prompts,
    chat_token_ids,
    chat_tokens,
)
from block.prefix import chain_hashes
from block.router.request_shape import parse_shape
from block.workload import get_tokenizer
from tests.openai_api.test_prompt_tokens import BODIES

TOKENIZER = get_tokenizer("llama3")
LAYOUT = Llama3Prompts(TOKENIZER.encode_ordinary)


@pytest.mark.parametrize(("path", "body"), BODIES)
def test_the_ids_are_as_many_as_the_count(path: str, body: dict) -> None:
    counted = parse_shape(path, body, TOKENIZER.count, None, 100)
    encoded = parse_shape(path, body, TOKENIZER.count, None, 100, prompt_ids=LAYOUT)
    assert encoded.prompt_tokens == counted.prompt_tokens
    ids = encoded.prompt_token_ids
    assert ids is not None and len(ids) == encoded.prompt_tokens  # every body there is one prompt
    assert counted.prompt_token_ids is None  # only counted: no ids


def test_a_batch_of_prompts_has_no_single_identity() -> None:
    body = {"prompt": ["one", "two"]}
    shape = parse_shape("/v1/completions", body, TOKENIZER.count, None, 1, prompt_ids=LAYOUT)
    assert shape.prompt_token_ids is None and shape.prompt_tokens == 4


def test_a_text_prompt_starts_with_begin_of_text_then_its_tokens() -> None:
    shape = parse_shape(
        "/v1/completions",
        {"prompt": "Hello world"},
        TOKENIZER.count,
        None,
        1,
        prompt_ids=LAYOUT,
    )
    assert shape.prompt_token_ids == [BEGIN_OF_TEXT_ID, *TOKENIZER.encode("Hello world")]


def test_token_id_prompts_are_their_own_ids() -> None:
    shape = parse_shape("/v1/completions", {"prompt": [5, 6, 7]}, TOKENIZER.count, None, 1, prompt_ids=LAYOUT)
    assert shape.prompt_token_ids == [5, 6, 7]


def test_the_chat_template_frames_each_message() -> None:
    messages = [("system", "Be brief."), ("user", "What is a KV cache?")]
    ids = chat_token_ids(messages, TOKENIZER.encode_ordinary)
    assert len(ids) == chat_tokens(messages, TOKENIZER.count)
    assert ids[0] == BEGIN_OF_TEXT_ID and ids[1] == START_HEADER_ID
    assert ids.count(EOT_ID) == 2 and ids.count(START_HEADER_ID) == 3  # two messages, the generation prompt


def test_a_follow_up_turn_shares_the_history_blocks() -> None:
    """Turn 2 resends turn 1 and its answer: every full block of turn 1's prompt is shared."""
    history = [("system", "You answer questions about caching. " * 8), ("user", "What is a KV cache? " * 6)]
    turn1 = chat_token_ids(history, TOKENIZER.encode_ordinary)
    turn2 = chat_token_ids(
        [*history, ("assistant", "It holds keys. " * 5), ("user", "And a prefix?")], TOKENIZER.encode_ordinary
    )
    h1, h2 = chain_hashes(turn1), chain_hashes(turn2)
    shared = 0
    while shared < min(len(h1), len(h2)) and h1[shared] == h2[shared]:
        shared += 1
    assert turn2[: len(turn1)] == turn1  # the generation prompt opens the answer's message
    assert shared == len(turn1) // 16 > 0
    unrelated = chain_hashes(
        chat_token_ids([("user", "Something else entirely. " * 10)], TOKENIZER.encode_ordinary)
    )
    assert unrelated[0] != h1[0]


def test_special_token_text_in_a_prompt_is_plain_text() -> None:
    """A prompt quoting "<|eot_id|>" is counted and laid out as text, never refused."""
    body = {"messages": [{"role": "user", "content": "What does <|eot_id|> mean?"}]}
    counted = parse_shape("/v1/chat/completions", body, TOKENIZER.count, None, 1)
    encoded = parse_shape("/v1/chat/completions", body, TOKENIZER.count, None, 1, prompt_ids=LAYOUT)
    assert encoded.prompt_token_ids is not None
    assert len(encoded.prompt_token_ids) == encoded.prompt_tokens == counted.prompt_tokens
    assert encoded.prompt_token_ids.count(EOT_ID) == 1  # only the template's own
