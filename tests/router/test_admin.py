"""Admin token, API key, body limits, bad JSON, /instances add and remove, two routers, /metrics."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.router.servers import FakeUpstream, router, upstreams


async def test_api_key_required() -> None:
    async with upstreams(FakeUpstream()) as (up,), router([up.url], api_key="k1") as (_, url):  # noqa: SIM117
        async with httpx.AsyncClient(timeout=5) as c:
            body = {"prompt": "a", "max_tokens": 1}
            r = await c.post(url + "/v1/completions", json=body)
            assert r.status_code == 401 and r.json()["error"]["type"] == "AuthenticationError"
            r = await c.post(url + "/v1/completions", json=body, headers={"authorization": "Bearer nope"})
            assert r.status_code == 401
            assert (await c.get(url + "/v1/models")).status_code == 401
            r = await c.post(url + "/v1/completions", json=body, headers={"authorization": "Bearer k1"})
            assert r.status_code == 200


async def test_body_limit_and_bad_json() -> None:
    async with upstreams(FakeUpstream()) as (up,), router([up.url], max_body_bytes=200) as (_, url):  # noqa: SIM117
        async with httpx.AsyncClient(timeout=5) as c:
            r = await c.post(url + "/v1/completions", json={"prompt": "a " * 200})
            assert r.status_code == 413 and "error" in r.json()

            async def chunked():  # no content-length: the limit applies while reading
                for _ in range(10):
                    yield b" " * 50

            r = await c.post(url + "/v1/completions", content=chunked())
            assert r.status_code == 413
            r = await c.post(url + "/v1/completions", content=b"{not json")
            assert r.status_code == 400 and r.json()["error"]["type"] == "BadRequestError"
            r = await c.post(url + "/v1/completions", json={"prompt": "a", "max_tokens": 0})
            assert r.status_code == 400
            assert (await c.get(url + "/v1/completions")).status_code == 405


async def test_instances_add_remove_guarded_by_admin_token() -> None:
    fakes = [FakeUpstream(), FakeUpstream()]
    async with upstreams(*fakes) as ups, router([ups[0].url], admin_token="adm") as (app, url):
        admin = {"authorization": "Bearer adm"}
        async with httpx.AsyncClient(timeout=5) as c:
            assert (await c.post(url + "/instances", json={"url": ups[1].url})).status_code == 401
            assert (
                await c.post(url + "/instances", json={"url": "ftp://x"}, headers=admin)
            ).status_code == 400
            assert (await c.post(url + "/instances", json={"nope": 1}, headers=admin)).status_code == 400
            r = await c.post(url + "/instances", json={"url": ups[1].url}, headers=admin)
            assert r.status_code == 201
            new_id = r.json()["id"]
            assert (
                await c.post(url + "/instances", json={"url": ups[1].url}, headers=admin)
            ).status_code == 409
            assert await app.pool.wait_ready(2, timeout=3)
            listing = (await c.get(url + "/instances", headers=admin)).json()["instances"]
            assert {i["id"] for i in listing} == {ups[0].url.removeprefix("http://"), new_id}
            row = next(i for i in listing if i["id"] == new_id)
            assert row["healthy"] and row["state_source"] == "/state" and row["snapshot_age_ms"] is not None
            assert {"in_flight", "last_forecast"} <= set(row)
            assert (await c.get(url + "/instances")).status_code == 401

            assert (await c.delete(url + f"/instances/{new_id}")).status_code == 401
            assert (await c.delete(url + f"/instances/{new_id}", headers=admin)).status_code == 200
            assert (await c.delete(url + f"/instances/{new_id}", headers=admin)).status_code == 404
            for _ in range(3):
                r = await c.post(url + "/v1/completions", json={"prompt": "a", "max_tokens": 1})
                assert r.headers["x-block-instance"] != new_id
        assert len(app.pool.instances) == 1


async def test_two_routers_share_nothing() -> None:
    fakes = [FakeUpstream(tokens=2) for _ in range(3)]
    async with upstreams(*fakes) as ups:
        urls = [u.url for u in ups]
        async with (
            router(urls, policy="least-requests") as (a, url_a),
            router(urls, policy="least-requests") as (b, url_b),
        ):
            async with httpx.AsyncClient(timeout=5) as c:

                async def one(i: int) -> httpx.Response:
                    return await c.post(
                        (url_a, url_b)[i % 2] + "/v1/completions", json={"prompt": "a", "stream": True}
                    )

                responses = await asyncio.gather(*(one(i) for i in range(40)))
            assert all(r.status_code == 200 and r.text.endswith("data: [DONE]\n\n") for r in responses)
            ids = [
                f.requests[i]["headers"]["x-block-request-id"] for f in fakes for i in range(len(f.requests))
            ]
            assert len(ids) == 40 and len(set(ids)) == 40  # request ids never collide across routers
            assert a.proxy._prefix != b.proxy._prefix


async def test_metrics_parse() -> None:
    fakes = [FakeUpstream(), FakeUpstream()]
    async with upstreams(*fakes) as ups, router([u.url for u in ups], policy="block") as (_, url):
        async with httpx.AsyncClient(timeout=5) as c:
            for _ in range(3):
                await c.post(url + "/v1/completions", json={"prompt": "a", "max_tokens": 1})
            text = (await c.get(url + "/metrics")).text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        for name in (
            "block_router_requests",
            "block_router_decision_seconds",
            "block_router_forecast_error_ratio",
            "block_router_fallbacks",
            "block_router_retries",
            "block_router_instance_healthy",
            "block_router_in_flight",
        ):
            assert name in families, name
        routed = sum(s.value for s in families["block_router_requests"].samples if s.name.endswith("_total"))
        assert routed == 3
        count = next(
            s.value for s in families["block_router_decision_seconds"].samples if s.name.endswith("_count")
        )
        assert count == 3
        healthy = [s.value for s in families["block_router_instance_healthy"].samples]
        assert healthy == [1.0, 1.0]


async def test_config_file_and_flags(tmp_path) -> None:  # noqa: ANN001
    from block.router.config import RouterConfig

    path = tmp_path / "router.yaml"
    path.write_text("instance: http://127.0.0.1:9/\npolicy: llumnix\ndeadline-ms: 3\nport: 9000\n")
    cfg = RouterConfig.build(path, port=8123, policy=None)
    assert cfg.instances == ["http://127.0.0.1:9"] and cfg.policy == "llumnix"
    assert cfg.deadline_ms == 3 and cfg.port == 8123
