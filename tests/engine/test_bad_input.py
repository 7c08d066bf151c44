"""Bad requests get HTTP 400 in OpenAI's error format, and leave the engine untouched."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from block.engine.server import BackgroundEngine
from tests.engine.conftest import TEST_MODEL
from tests.engine.helpers import idle, wait_for

MESSAGES = [{"role": "user", "content": "hi"}]

CASES = [
    # (route, raw body or JSON, param expected in the error)
    ("/v1/completions", b"{not json", None),
    ("/v1/completions", b"[1, 2]", None),
    ("/v1/completions", {"max_tokens": 3}, "prompt"),
    ("/v1/completions", {"prompt": None}, "prompt"),
    ("/v1/completions", {"prompt": 12}, "prompt"),
    ("/v1/completions", {"prompt": [1, 2.5]}, "prompt"),
    ("/v1/completions", {"prompt": "x", "max_tokens": "ten"}, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "max_tokens": -5}, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "stream": "yes"}, "stream"),
    ("/v1/completions", {"prompt": "x", "ignore_eos": 1}, "ignore_eos"),
    ("/v1/completions", {"prompt": "x", "n": 2}, "n"),
    ("/v1/completions", {"prompt": "x", "model": 7}, "model"),
    ("/v1/completions", {"prompt": list(range(4096)), "max_tokens": 1}, "prompt"),  # over max_model_len
    ("/v1/completions", {"prompt": list(range(4000)), "max_tokens": 200, "ignore_eos": True}, "max_tokens"),
    ("/v1/completions", {"prompt": list(range(1100)), "max_tokens": 1}, "prompt"),  # > 64 blocks x 16
    ("/v1/completions", {"prompt": list(range(900)), "max_tokens": 200, "ignore_eos": True}, "max_tokens"),
    ("/v1/chat/completions", {"max_tokens": 3}, "messages"),
    ("/v1/chat/completions", {"messages": []}, "messages"),
    ("/v1/chat/completions", {"messages": [{"content": "no role"}]}, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, "messages"),
    ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 0}, "max_tokens"),
    ("/v1/chat/completions", {"messages": MESSAGES, "max_completion_tokens": -1}, "max_completion_tokens"),
    ("/v1/chat/completions", {"messages": MESSAGES, "n": 3}, "n"),
    # vLLM's validation: max_tokens beyond what the prompt leaves of the context, without ignore_eos
    ("/v1/completions", {"prompt": list(range(100)), "max_tokens": 4000}, "max_tokens"),
    ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 4096}, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "temperature": -1}, "temperature"),
    ("/v1/completions", {"prompt": "x", "top_p": 1.5}, "top_p"),
    ("/v1/completions", {"prompt": "x", "top_p": 0}, "top_p"),
    ("/v1/completions", {"prompt": "x", "min_tokens": 5, "max_tokens": 2}, "min_tokens"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 2.5}, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "stop": [1]}, "stop"),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
        "messages",
    ),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages"),
]


@pytest.fixture
async def client(engine: BackgroundEngine) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=engine.url, timeout=10.0) as c:
        yield c


@pytest.mark.parametrize(("route", "body", "param"), CASES)
async def test_bad_input_is_a_400_in_openai_format(
    client: httpx.AsyncClient, route: str, body: bytes | dict, param: str | None
) -> None:
    if isinstance(body, bytes):
        r = await client.post(route, content=body, headers={"content-type": "application/json"})
    else:
        r = await client.post(route, json=body)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "BadRequestError" and err["code"] == 400 and err["message"]
    assert err["param"] == param


async def test_unknown_model_is_vllms_404(client: httpx.AsyncClient) -> None:
    for route, body in [
        ("/v1/completions", {"model": "gpt-nope", "prompt": "x", "max_tokens": 1}),
        ("/v1/chat/completions", {"model": "gpt-nope", "messages": MESSAGES, "max_tokens": 1}),
    ]:
        r = await client.post(route, json=body)
        assert r.status_code == 404, r.text
        assert r.json()["error"] == {
            "message": "The model `gpt-nope` does not exist.",
            "type": "NotFoundError",
            "param": "model",
            "code": 404,
        }
    for model in (TEST_MODEL, None, ""):  # the served name, or none: served
        r = await client.post("/v1/completions", json={"model": model, "prompt": "x", "max_tokens": 1})
        assert r.status_code == 200, r.text


async def test_max_tokens_within_the_context_and_integral_floats_are_served(
    client: httpx.AsyncClient,
) -> None:
    # 100 prompt tokens leave 3,996 of the 4,096-token context; the KV cache (1,024 tokens) caps the sample
    r = await client.post("/v1/completions", json={"prompt": list(range(100)), "max_tokens": 3996})
    assert r.status_code == 200, r.text
    r = await client.post("/v1/completions", json={"prompt": "x", "max_tokens": 3.0, "ignore_eos": True})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3


async def test_bad_expected_output_header(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/completions", json={"prompt": [1]}, headers={"x-block-expected-output-tokens": "lots"}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "x-block-expected-output-tokens"


async def test_refused_requests_leave_no_trace(client: httpx.AsyncClient) -> None:
    await wait_for(client, idle)
