"""The official `openai` client talks to the emulator as to vLLM."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest

from block.engine import synthetic_text
from block.engine.server import BackgroundEngine
from tests.engine.conftest import TEST_MODEL

FIXED = {"ignore_eos": True}


@pytest.fixture
async def oai(engine: BackgroundEngine) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=engine.url + "/v1", api_key="unused", max_retries=0, timeout=10.0)
    try:
        yield client
    finally:
        await client.close()


async def test_models(oai: openai.AsyncOpenAI) -> None:
    models = await oai.models.list()
    assert [m.id for m in models.data] == [TEST_MODEL]


async def test_completion(oai: openai.AsyncOpenAI) -> None:
    c = await oai.completions.create(model=TEST_MODEL, prompt="Say hi", max_tokens=5, extra_body=FIXED)
    assert c.choices[0].text == synthetic_text.text_of(5) and c.choices[0].finish_reason == "length"
    assert c.usage is not None and c.usage.completion_tokens == 5


async def test_completion_stream(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.completions.create(
        model=TEST_MODEL,
        prompt=[1, 2, 3],
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=FIXED,
    )
    texts, usage, reasons = [], None, []
    async for chunk in stream:
        if chunk.choices:
            texts.append(chunk.choices[0].text)
            reasons.append(chunk.choices[0].finish_reason)
        if chunk.usage is not None:
            usage = chunk.usage
    assert len(texts) == 4 and reasons[-1] == "length"
    assert usage is not None and usage.prompt_tokens == 3 and usage.completion_tokens == 4


async def test_chat(oai: openai.AsyncOpenAI) -> None:
    c = await oai.chat.completions.create(
        model=TEST_MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=3, extra_body=FIXED
    )
    assert c.choices[0].message.role == "assistant" and c.choices[
        0
    ].message.content == synthetic_text.text_of(3)
    assert c.usage is not None and c.usage.total_tokens == c.usage.prompt_tokens + 3


async def test_chat_stream(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(
        model=TEST_MODEL,
        messages=[{"role": "user", "content": "hello"}],
        max_completion_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=FIXED,
    )
    content, usage, finish = "", None, None
    async for chunk in stream:
        if chunk.choices:
            content += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    assert content == synthetic_text.text_of(6) and finish == "length"
    assert usage is not None and usage.completion_tokens == 6


async def test_bad_request_raises_the_openai_error(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        await oai.completions.create(model=TEST_MODEL, prompt="x", max_tokens=1, n=2)
    assert e.value.status_code == 400 and "n=1" in str(e.value)
