"""Proxying: streams pass through incrementally, non-streaming too; headers and expected length travel."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson

from tests.router.servers import FakeUpstream, router, upstreams


async def test_non_streaming_passes_through_with_headers() -> None:
    fake = FakeUpstream()
    async with upstreams(fake) as (up,), router([up.url], policy="round-robin") as (_, url):
        async with httpx.AsyncClient(timeout=5) as c:
            r = await c.post(url + "/v1/completions", json={"prompt": "one two three", "max_tokens": 4})
        assert r.status_code == 200
        assert r.json()["choices"][0]["text"] == "xxxx"
        assert r.headers["x-block-instance"] == up.url.removeprefix("http://")
        sent = fake.requests[-1]
        assert sent["headers"]["x-block-request-id"] == r.headers["x-block-request-id"]
        assert sent["headers"]["x-block-expected-output-tokens"] == "4"
        assert sent["body"]["expected_output_tokens"] == 4  # a Block engine gets the body field too


async def test_vllm_instance_gets_header_but_untouched_body() -> None:
    fake = FakeUpstream(block=False)
    async with upstreams(fake) as (up,), router([up.url], policy="round-robin") as (app, url):
        assert app.pool.instances[up.url.removeprefix("http://")].kind == "vllm"
        async with httpx.AsyncClient(timeout=5) as c:
            r = await c.post(
                url + "/v1/completions", json={"prompt": "a b", "max_tokens": 3, "ignore_eos": True}
            )
        assert r.status_code == 200
        assert "expected_output_tokens" not in fake.requests[-1]["body"]
        assert fake.requests[-1]["headers"]["x-block-expected-output-tokens"] == "3"


async def test_stream_is_relayed_incrementally() -> None:
    fake = FakeUpstream(tokens=6, token_delay=0.15)
    async with upstreams(fake) as (up,), router([up.url], policy="least-requests") as (_, url):
        arrivals: list[tuple[float, bytes]] = []
        async with httpx.AsyncClient(timeout=10) as c:
            start = time.monotonic()
            async with c.stream("POST", url + "/v1/completions", json={"prompt": "hi", "stream": True}) as r:
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/event-stream")
                async for chunk in r.aiter_raw():
                    arrivals.append((time.monotonic() - start, chunk))
        body = b"".join(c for _, c in arrivals)
        assert body.count(b"data: {") == 6 and body.endswith(b"data: [DONE]\n\n")
        # The first token reaches the client long before the last one is generated: not buffered.
        first_token_at = next(t for t, c in arrivals if b"t0" in c)
        assert first_token_at < 0.5 and arrivals[-1][0] > 0.7
        assert len(arrivals) >= 4


async def test_chat_and_models_and_health() -> None:
    fake = FakeUpstream()
    async with upstreams(fake) as (up,), router([up.url], policy="random") as (_, url):  # noqa: SIM117
        async with httpx.AsyncClient(timeout=5) as c:
            r = await c.post(
                url + "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 2},
            )
            assert r.status_code == 200
            assert fake.requests[-1]["path"] == "/v1/chat/completions"
            models = await c.get(url + "/v1/models")
            assert models.json()["data"][0]["id"] == "fake-model"
            health = await c.get(url + "/health")
            assert health.status_code == 200 and health.json()["healthy_instances"] == 1


async def test_openai_client_works_through_router() -> None:
    import openai

    fake = FakeUpstream(tokens=3)
    async with (
        upstreams(fake) as (up,),
        router([up.url], policy="round-robin", api_key="sk-test") as (_, url),
    ):
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0)
        out = await client.completions.create(model="fake-model", prompt="hi", max_tokens=3)
        assert out.choices[0].text == "xxx"
        pieces = []
        stream = await client.completions.create(model="fake-model", prompt="hi", max_tokens=3, stream=True)
        async for event in stream:
            pieces.append(event.choices[0].text)
        assert pieces == ["t0", "t1", "t2"]
        await client.close()


async def test_concurrent_requests_all_complete() -> None:
    fakes = [FakeUpstream(tokens=3, token_delay=0.005) for _ in range(3)]
    async with upstreams(*fakes) as ups, router([u.url for u in ups], policy="least-requests") as (app, url):
        async with httpx.AsyncClient(timeout=10) as c:

            async def one(i: int) -> int:
                r = await c.post(url + "/v1/completions", json={"prompt": f"p {i}", "stream": i % 2 == 0})
                return r.status_code

            codes = await asyncio.gather(*(one(i) for i in range(60)))
        assert codes == [200] * 60
        assert sum(len(f.requests) for f in fakes) == 60
        assert all(len(f.requests) > 0 for f in fakes)
        await asyncio.sleep(0.05)
        assert all(i.tracker.in_flight == 0 for i in app.pool.instances.values())


def test_error_body_is_openai_format() -> None:
    from block.router.errors import error_body

    e = orjson.loads(error_body(400, "bad"))["error"]
    assert e == {"message": "bad", "type": "BadRequestError", "param": None, "code": 400}  # vLLM's shape
