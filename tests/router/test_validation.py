"""The router refuses what vLLM refuses, before choosing an instance: a 400 in OpenAI's format for a
bad field, vLLM's 404 for a model no instance serves. Nothing refused reaches an instance."""

from __future__ import annotations

import asyncio

import httpx

from tests.router.servers import FakeUpstream, router, upstreams

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
USER = [{"role": "user", "content": "hi"}]

BAD = [
    # (path, body, param named in the error)
    (CHAT, {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "messages"),
    (CHAT, {"messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]}, "messages"),
    (CHAT, {"messages": [{"role": "user", "content": [7]}]}, "messages"),
    (CHAT, {"messages": [{"content": "no role"}]}, "messages"),
    (CHAT, {"messages": "hi"}, "messages"),
    (CHAT, {"messages": USER, "max_completion_tokens": 2.5}, "max_completion_tokens"),
    (COMPLETIONS, {"prompt": "a", "temperature": -1}, "temperature"),
    (COMPLETIONS, {"prompt": "a", "temperature": "hot"}, "temperature"),
    (COMPLETIONS, {"prompt": "a", "top_p": 1.5}, "top_p"),
    (COMPLETIONS, {"prompt": "a", "top_p": 0}, "top_p"),
    (COMPLETIONS, {"prompt": "a", "min_tokens": 9, "max_tokens": 3}, "min_tokens"),
    (COMPLETIONS, {"prompt": "a", "max_tokens": -1}, "max_tokens"),
    (COMPLETIONS, {"prompt": "a", "max_tokens": 5.5}, "max_tokens"),
    (COMPLETIONS, {"prompt": "a", "stream": "yes"}, "stream"),
    (COMPLETIONS, {"prompt": "a", "n": "2"}, "n"),
    (COMPLETIONS, {"prompt": "a", "stop": 5}, "stop"),
    (COMPLETIONS, {"prompt": "a", "model": 5}, "model"),
    (COMPLETIONS, {"prompt": ""}, "prompt"),
]


async def test_bad_fields_are_a_400_naming_the_field() -> None:
    fake = FakeUpstream()
    async with upstreams(fake) as (up,), router([up.url]) as (_, url):  # noqa: SIM117
        async with httpx.AsyncClient(base_url=url, timeout=5) as c:
            for path, body, param in BAD:
                r = await c.post(path, json=body)
                assert r.status_code == 400, (body, r.text)
                err = r.json()["error"]
                assert err["type"] == "BadRequestError" and err["code"] == 400 and err["message"], body
                assert err["param"] == param, (body, err)
    assert fake.requests == []


async def test_integral_float_max_tokens_is_accepted() -> None:
    fake = FakeUpstream()
    async with upstreams(fake) as (up,), router([up.url]) as (_, url):  # noqa: SIM117
        async with httpx.AsyncClient(base_url=url, timeout=5) as c:
            r = await c.post(COMPLETIONS, json={"prompt": "a", "max_tokens": 5.0})
            assert r.status_code == 200, r.text
            r = await c.post(CHAT, json={"messages": USER, "max_completion_tokens": 3.0})
            assert r.status_code == 200, r.text
    assert [q["body"].get("max_tokens") for q in fake.requests] == [5.0, None]


async def test_unknown_model_is_vllms_404() -> None:
    fakes = [FakeUpstream(models=["m1"]), FakeUpstream(models=["m2"])]
    async with upstreams(*fakes) as ups, router([u.url for u in ups]) as (app, url):  # noqa: SIM117
        assert app.pool.served_models() == {"m1", "m2"}
        async with httpx.AsyncClient(base_url=url, timeout=5) as c:
            r = await c.post(COMPLETIONS, json={"model": "nope", "prompt": "a"})
            assert r.status_code == 404
            assert r.json()["error"] == {
                "message": "The model `nope` does not exist.",
                "type": "NotFoundError",
                "param": "model",
                "code": 404,
            }
            r = await c.post(CHAT, json={"model": "nope", "messages": USER})
            assert r.status_code == 404
            assert sum(len(f.requests) for f in fakes) == 0
            for body in ({"model": "m1", "prompt": "a"}, {"model": "m2", "prompt": "a"}, {"prompt": "a"}):
                r = await c.post(COMPLETIONS, json=body)
                assert r.status_code == 200, (body, r.text)


async def test_models_pass_through_while_an_instance_has_no_model_list() -> None:
    fakes = [FakeUpstream(models=["m1"]), FakeUpstream(models=None)]  # the second: /v1/models is a 404
    async with upstreams(*fakes) as ups, router([u.url for u in ups]) as (app, url):  # noqa: SIM117
        assert app.pool.served_models() is None
        async with httpx.AsyncClient(base_url=url, timeout=5) as c:
            r = await c.post(COMPLETIONS, json={"model": "anything", "prompt": "a"})
        assert r.status_code == 200, r.text
        assert [q["body"]["model"] for f in fakes for q in f.requests] == ["anything"]


async def test_a_model_list_is_learned_lazily_once_the_instance_has_one() -> None:
    fake = FakeUpstream(models=None)
    async with upstreams(fake) as (up,), router([up.url]) as (app, url):  # noqa: SIM117
        assert app.pool.served_models() is None
        fake.models = ["m1"]
        [inst] = app.pool.routable()
        inst.models_asked_at = float("-inf")  # skip the retry interval
        app.pool.served_models()  # notices the missing list and asks again in the background
        for _ in range(200):  # bounded: 2 s
            if app.pool.served_models() is not None:
                break
            await asyncio.sleep(0.01)
        assert app.pool.served_models() == {"m1"}
        async with httpx.AsyncClient(base_url=url, timeout=5) as c:
            assert (await c.post(COMPLETIONS, json={"model": "x", "prompt": "a"})).status_code == 404


async def test_unknown_paths_and_methods_answer_in_openais_format() -> None:
    fake = FakeUpstream()
    async with upstreams(fake) as (up,), router([up.url]) as (_, url):  # noqa: SIM117
        async with httpx.AsyncClient(base_url=url, timeout=5) as c:
            for method, path, status in (("GET", "/v1/nope", 404), ("PUT", "/instances", 405)):
                r = await c.request(method, path)
                assert r.status_code == status, r.text
                err = r.json()["error"]
                assert err["code"] == status and err["message"]
    assert fake.requests == []
