"""The OpenAI / vLLM HTTP surface of a live emulator (test profile, noise 0)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from block.engine import prompt_tokens, synthetic_text
from block.engine.server import BackgroundEngine
from tests.engine.conftest import TEST_MODEL
from tests.engine.helpers import idle, sse_events, wait_for


@pytest.fixture
async def client(engine: BackgroundEngine) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=engine.url, timeout=10.0) as c:
        yield c


async def test_streaming_completion_format(client: httpx.AsyncClient) -> None:
    body = {
        "prompt": [5, 6, 7],
        "max_tokens": 7,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    r = await client.post("/v1/completions", json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    arrival = float(r.headers["x-block-arrival-time"])  # on the engine clock, as /state's `now`
    assert 0 <= arrival <= (await client.get("/state")).json()["now"]
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10}
    tokens = events[:-2]
    assert len(tokens) == 7  # one event per token
    assert all(e["object"] == "text_completion" and e["model"] == TEST_MODEL for e in tokens)
    assert len({e["id"] for e in events[:-1]}) == 1 and tokens[0]["id"].startswith("cmpl-")
    assert [e["choices"][0]["finish_reason"] for e in tokens] == [None] * 6 + ["length"]
    assert "".join(e["choices"][0]["text"] for e in tokens) == synthetic_text.text_of(7)


async def test_streaming_without_usage_has_no_usage_chunk(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/completions", json={"prompt": "hi", "max_tokens": 3, "ignore_eos": True, "stream": True}
    )
    events = sse_events(r.text)
    assert len(events) == 4 and events[-1] == "[DONE]"
    assert all("usage" not in e or e["usage"] is None for e in events[:-1])


async def test_non_streaming_completion(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/completions", json={"prompt": "Hello world", "max_tokens": 12, "ignore_eos": True}
    )
    assert r.status_code == 200 and float(r.headers["x-block-arrival-time"]) >= 0
    d = r.json()
    assert d["object"] == "text_completion" and d["model"] == TEST_MODEL
    [choice] = d["choices"]
    assert choice["finish_reason"] == "length" and choice["text"] == synthetic_text.text_of(12)
    prompt = prompt_tokens.count_text("Hello world") + 1  # vLLM adds <|begin_of_text|>
    assert d["usage"] == {"prompt_tokens": prompt, "completion_tokens": 12, "total_tokens": prompt + 12}


async def test_token_id_prompt_counts_ids(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/completions", json={"prompt": list(range(100, 190)), "max_tokens": 2, "ignore_eos": True}
    )
    assert r.json()["usage"]["prompt_tokens"] == 90


async def test_sampled_length_is_capped_by_max_tokens_and_reproducible(client: httpx.AsyncClient) -> None:
    async def one(i: int) -> int:
        r = await client.post(
            "/v1/completions",
            json={"prompt": [1], "max_tokens": 40},
            headers={"x-block-request-id": f"fixed-{i % 2}"},
        )
        d = r.json()
        n = d["usage"]["completion_tokens"]
        assert 1 <= n <= 40
        assert d["choices"][0]["finish_reason"] == ("length" if n == 40 else "stop")
        return n

    lengths = await asyncio.gather(*(one(i) for i in range(4)))
    assert lengths[0] == lengths[2] and lengths[1] == lengths[3]  # same seed and id, same length


async def test_chat_non_streaming(client: httpx.AsyncClient) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    r = await client.post(
        "/v1/chat/completions", json={"messages": messages, "max_tokens": 4, "ignore_eos": True}
    )
    d = r.json()
    assert r.status_code == 200 and d["object"] == "chat.completion" and d["id"].startswith("chatcmpl-")
    assert d["choices"][0]["message"] == {
        "role": "assistant",
        "content": synthetic_text.text_of(4),
        "tool_calls": [],
    }
    expected_prompt = prompt_tokens.count_chat([("system", "Be brief."), ("user", "Hello there")])
    assert d["usage"] == {
        "prompt_tokens": expected_prompt,
        "completion_tokens": 4,
        "total_tokens": expected_prompt + 4,
    }


async def test_chat_streaming(client: httpx.AsyncClient) -> None:
    body = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "max_tokens": 3,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    events = sse_events((await client.post("/v1/chat/completions", json=body)).text)
    assert events[-1] == "[DONE]" and events[-2]["usage"]["completion_tokens"] == 3
    chunks = events[:-2]
    assert all(e["object"] == "chat.completion.chunk" for e in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [e["choices"][0]["delta"]["content"] for e in chunks[1:]]
    assert len(deltas) == 3 and "".join(deltas) == synthetic_text.text_of(3)
    assert [e["choices"][0]["finish_reason"] for e in chunks] == [None, None, None, "length"]


@pytest.mark.parametrize("via", ["body", "header"])
async def test_expected_output_tokens_in_state(client: httpx.AsyncClient, via: str) -> None:
    rid = f"expect-{via}"
    body = {"prompt": list(range(40)), "max_tokens": 30, "ignore_eos": True, "stream": True}
    headers = {"x-block-request-id": rid}
    if via == "body":
        body["expected_output_tokens"] = 77
    else:
        headers["x-block-expected-output-tokens"] = "77"
    async with client.stream("POST", "/v1/completions", json=body, headers=headers) as r:
        lines = r.aiter_lines()
        async for line in lines:  # wait for the first token: the request is running then
            if line.startswith("data: "):
                break
        state = (await client.get("/state")).json()
        [mine] = [q for q in state["running"] + state["waiting"] if q["id"] == rid]
        assert mine["expected_output_tokens"] == 77 and mine["prompt_tokens"] == 40
        assert mine["output_tokens"] >= 1 and mine["computed_tokens"] >= 40
        assert state["profile"] == "test-profile" and state["now"] >= mine["arrival_time"]
        assert state["free_blocks"] < state["config"]["num_gpu_blocks"]
        async for _ in lines:
            pass
    await wait_for(client, idle)


async def test_state_reports_a_step_in_progress(client: httpx.AsyncClient) -> None:
    async with client.stream(
        "POST", "/v1/completions", json={"prompt": [1], "max_tokens": 20, "ignore_eos": True, "stream": True}
    ):
        state = await wait_for(client, lambda s: "step_in_progress_until" in s)
        assert state["step_in_progress_until"] > state["now"] - 0.05
    await wait_for(client, idle)


async def test_metrics_parse_with_vllm_names(client: httpx.AsyncClient) -> None:
    await client.post("/v1/completions", json={"prompt": [1, 2], "max_tokens": 3, "ignore_eos": True})
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:cache_config_info",
    ):
        assert families[name].type == "gauge", name
    for name in ("vllm:num_preemptions", "vllm:prompt_tokens", "vllm:generation_tokens"):
        assert families[name].type == "counter", name
        assert families[name].samples[0].name == name + "_total"
    for name in (
        "vllm:time_to_first_token_seconds",
        "vllm:inter_token_latency_seconds",
        "vllm:e2e_request_latency_seconds",
    ):
        assert families[name].type == "histogram", name
        count = next(s for s in families[name].samples if s.name == name + "_count")
        assert count.value >= 1 and count.labels == {"model_name": TEST_MODEL}
    [info] = families["vllm:cache_config_info"].samples
    assert info.value == 1 and info.labels["block_size"] == "16" and info.labels["num_gpu_blocks"] == "64"
    assert families["vllm:generation_tokens"].samples[0].value >= 3
    usage = families["vllm:kv_cache_usage_perc"].samples[0]
    assert 0 <= usage.value <= 1 and usage.labels == {"model_name": TEST_MODEL}


async def test_models_health_version_and_404(client: httpx.AsyncClient) -> None:
    models = (await client.get("/v1/models")).json()
    assert models["object"] == "list" and models["data"][0]["id"] == TEST_MODEL
    assert models["data"][0]["max_model_len"] == 4096
    assert (await client.get("/health")).status_code == 200
    assert "version" in (await client.get("/version")).json()
    r = await client.get("/no/such/route")
    assert r.status_code == 404 and r.json()["error"]["code"] == 404
    r = await client.get("/v1/completions")
    assert r.status_code == 405 and "error" in r.json()
