"""Bad requests get HTTP 400 in OpenAI's error format, and leave the engine untouched."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from block.engine.server import BackgroundEngine
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


async def test_bad_expected_output_header(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/completions", json={"prompt": [1]}, headers={"x-block-expected-output-tokens": "lots"}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "x-block-expected-output-tokens"


async def test_refused_requests_leave_no_trace(client: httpx.AsyncClient) -> None:
    await wait_for(client, idle)
