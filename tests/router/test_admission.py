"""Admission in the router: 429 with Retry-After in OpenAI's format, holding until a forecast says the
target can be met, the bound on held requests, clients that leave while held, per-priority metrics."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import httpx

from tests.router.servers import FakeUpstream, router, upstreams


class BusyUpstream(FakeUpstream):
    """A Block engine whose /state shows a deep queue while `busy` is set (forecasts: seconds)."""

    busy: bool = True

    def state(self) -> dict[str, Any]:
        state = super().state()
        state["profile"] = "llama-2-7b-a30"  # forecasts need the engine's step-time profile
        state["config"]["num_gpu_blocks"] = state["free_blocks"] = 4096
        if self.busy:
            now = time.monotonic()
            state["waiting"] = [
                {"id": f"q{i}", "arrival_time": now, "prompt_tokens": 800, "expected_output_tokens": 200}
                for i in range(20)
            ]
        return state


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))  # as Prometheus renders them
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}}") or (not labels and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_reject_answers_429_with_retry_after_and_counts_per_priority() -> None:
    fake = BusyUpstream()
    async with (
        upstreams(fake) as (up,),
        router([up.url], deadline_ms=500, admission="reject") as (_, url),
        httpx.AsyncClient(timeout=10) as c,
    ):
        body = {"prompt": "a b", "max_tokens": 4}
        r = await c.post(
            url + "/v1/completions", json=body, headers={"x-slo-ttft-ms": "100", "x-priority": "2"}
        )
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        error = r.json()["error"]
        assert error["type"] == "RateLimitError" and error["code"] == "slo_unreachable"
        assert "TTFT 100 ms" in error["message"]
        fake.busy = False
        await asyncio.sleep(0.1)  # a snapshot of the idle engine
        ok = await c.post(url + "/v1/completions", json={"prompt": "a b", "max_tokens": 4})
        assert ok.status_code == 200
        bad = await c.post(url + "/v1/completions", json=body, headers={"x-slo-ttft-ms": "soon"})
        assert bad.status_code == 400 and "x-slo-ttft-ms" in bad.json()["error"]["message"]
        text = (await c.get(url + "/metrics")).text
    assert metric(text, "block_router_admission_total", priority="2", outcome="rejected") == 1
    assert metric(text, "block_router_admission_total", priority="0", outcome="admitted") == 1
    assert metric(text, "block_router_goodput_total", priority="0") == 1


async def test_held_request_is_placed_when_a_snapshot_says_the_target_can_be_met() -> None:
    fake = BusyUpstream()
    async with (
        upstreams(fake) as (up,),
        router([up.url], deadline_ms=500, admission="queue") as (app, url),
        httpx.AsyncClient(timeout=10) as c,
    ):
        started = time.monotonic()
        send = asyncio.create_task(c.post(url + "/v1/completions", json={"prompt": "a b", "max_tokens": 4}))
        for _ in range(100):  # bounded: until it is held
            if len(app.admission.queue):
                break
            await asyncio.sleep(0.01)
        assert len(app.admission.queue) == 1
        fake.busy = False  # the next snapshot shows an idle engine: the held request starts
        r = await asyncio.wait_for(send, 5)
        assert r.status_code == 200 and time.monotonic() - started < 3.0
        text = (await c.get(url + "/metrics")).text
    assert metric(text, "block_router_admission_total", priority="0", outcome="held") == 1
    assert metric(text, "block_router_admission_total", priority="0", outcome="admitted") == 1
    assert metric(text, "block_router_held_seconds_count") == 1
    assert metric(text, "block_router_held") == 0


async def test_flood_of_ten_times_the_bound_gets_429s_never_5xx() -> None:
    fake = BusyUpstream()
    bound = 5
    async with (
        upstreams(fake) as (up,),
        router([up.url], deadline_ms=500, admission="queue", max_held=bound) as (app, url),
    ):
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(timeout=10, limits=limits) as c:
            body = {"prompt": "a b", "max_tokens": 4}
            headers = {"x-slo-ttft-ms": "1000"}
            sends = [c.post(url + "/v1/completions", json=body, headers=headers) for _ in range(10 * bound)]
            replies = await asyncio.wait_for(asyncio.gather(*sends), 10)
            assert len(app.admission.queue) == 0
            text = (await c.get(url + "/metrics")).text
    statuses = [r.status_code for r in replies]
    assert set(statuses) == {429}, statuses
    codes = [r.json()["error"]["code"] for r in replies]
    # Beyond the bound: 429 at once; the held ones at their deadline (more of them when the flood
    # takes longer than a deadline to arrive on a loaded machine).
    assert codes.count("queue_full") + codes.count("slo_unmet") == 10 * bound
    assert codes.count("slo_unmet") >= bound and codes.count("queue_full") >= bound
    assert all("retry-after" in r.headers for r in replies)
    assert metric(text, "block_router_admission_total", priority="0", outcome="rejected") == 10 * bound


async def test_client_leaving_while_held_is_dropped_from_the_queue() -> None:
    fake = BusyUpstream()
    async with upstreams(fake) as (up,), router([up.url], deadline_ms=500, admission="queue") as (app, url):
        async with httpx.AsyncClient(timeout=0.3) as c:
            with contextlib.suppress(httpx.TimeoutException):  # the client gives up while held
                await c.post(
                    url + "/v1/completions",
                    json={"prompt": "a b", "max_tokens": 4},
                    headers={"x-slo-ttft-ms": "5000"},
                )
        for _ in range(100):  # bounded: until the router saw the disconnect
            if not len(app.admission.queue):
                break
            await asyncio.sleep(0.01)
        assert len(app.admission.queue) == 0
        assert not fake.requests  # never reached the engine


async def test_api_key_priority_is_the_default_of_its_requests() -> None:
    fake = BusyUpstream()
    keys = {"gold": 5}
    async with (
        upstreams(fake) as (up,),
        router([up.url], deadline_ms=500, admission="reject", api_key="plain", api_keys=keys) as (_, url),
        httpx.AsyncClient(timeout=10) as c,
    ):
        body = {"prompt": "a b", "max_tokens": 4}
        slo = {"x-slo-ttft-ms": "1"}
        for key in ("gold", "plain"):
            r = await c.post(
                url + "/v1/completions", json=body, headers={**slo, "authorization": f"Bearer {key}"}
            )
            assert r.status_code == 429
        r = await c.post(url + "/v1/completions", json=body, headers=slo)
        assert r.status_code == 401
        text = (await c.get(url + "/metrics", headers={"authorization": "Bearer plain"})).text
    assert metric(text, "block_router_admission_total", priority="5", outcome="rejected") == 1
    assert metric(text, "block_router_admission_total", priority="0", outcome="rejected") == 1


def test_api_key_flags_plain_and_with_priority() -> None:
    from block.router.config import RouterConfig, parse_api_keys

    assert parse_api_keys(["plain"]) == ("plain", {})
    assert parse_api_keys(["gold:5", "plain", "bronze:-1", "other"]) == (
        "plain",
        {"gold": 5, "bronze": -1, "other": 0},
    )
    assert parse_api_keys(["a:b"]) == ("a:b", {})  # not an integer after the colon: all of it is the key
    cfg = RouterConfig.build(admission="queue", max_held=7, admission_ttft_ms=500)
    assert cfg.admission_settings().ttft_s == 0.5 and cfg.admission_settings().max_held == 7
    assert RouterConfig().admission == "off"  # admission stays off unless asked for
