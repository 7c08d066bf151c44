"""Per-attempt timeouts, client disconnects and the in-flight gauge (issue 21, items 3, 4 and 5), against
fake upstreams and a real Block engine served on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time

import httpx
import orjson

from block.engine.server import BackgroundEngine
from block.engine.settings import EngineSettings, replica_config
from block.profiles import load_profile
from tests.router.servers import FakeUpstream, router, upstreams
from tests.router.test_failures import wait_for


def in_flight_values(metrics_text: str) -> dict[str, float]:
    """block_router_in_flight per instance, from GET /metrics."""
    pattern = r'^block_router_in_flight\{instance="([^"]+)"\} (\S+)$'
    return {m[1]: float(m[2]) for m in re.finditer(pattern, metrics_text, re.MULTILINE)}


async def instance_row(c: httpx.AsyncClient, url: str, instance_id: str) -> dict:
    rows = (await c.get(url + "/instances", headers={"authorization": "Bearer adm"})).json()["instances"]
    return next(r for r in rows if r["id"] == instance_id)


async def test_non_stream_is_aborted_upstream_when_the_client_leaves() -> None:
    fake = FakeUpstream(token_delay=0.5)  # 20 tokens: the answer would come after 10 s
    async with upstreams(fake) as (up,), router([up.url], policy="round-robin") as (app, url):
        inst = app.pool.routable()[0]
        async with httpx.AsyncClient(timeout=0.5) as c:
            with contextlib.suppress(httpx.ReadTimeout):  # httpx closes the connection: the client left
                await c.post(url + "/v1/completions", json={"prompt": "a", "max_tokens": 20})
        await wait_for(lambda: fake.disconnects == 1, timeout=3.0)  # the router hung up on the engine
        await wait_for(lambda: inst.tracker.in_flight == 0, timeout=1.0)
        assert len(fake.requests) == 1  # and did not try again


async def test_non_stream_abort_frees_a_real_engine() -> None:
    profile = load_profile("tiny-fast")
    settings = EngineSettings(profile, replica_config(profile), noise=0.0, seed=0)
    engine = BackgroundEngine(settings).start()
    try:
        async with router([engine.url], policy="round-robin") as (_, url):
            body = {"prompt": "hello", "max_tokens": 4000, "ignore_eos": True}  # ~5 s of generation
            async with httpx.AsyncClient(timeout=0.5) as c:
                with contextlib.suppress(httpx.ReadTimeout):
                    await c.post(url + "/v1/completions", json=body)
            async with httpx.AsyncClient(timeout=5) as c:

                async def running() -> int:
                    state = (await c.get(engine.url + "/state")).json()
                    return len(state["running"]) + len(state["waiting"])

                deadline = time.monotonic() + 2.0
                while await running() and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert await running() == 0  # aborted long before its 5 s were up
    finally:
        engine.stop()


async def test_a_client_that_left_is_not_retried() -> None:
    """A stream waiting for its first token on a hung instance: the client leaves; the router hangs up
    on the instance and sends the request nowhere else (it once came back to it after 300 s)."""
    fakes = [FakeUpstream(mode="hang"), FakeUpstream(mode="hang")]
    async with (
        upstreams(*fakes) as ups,
        router([u.url for u in ups], policy="round-robin", first_byte_timeout_s=30.0) as (_, url),
    ):
        async with httpx.AsyncClient(timeout=0.3) as c:
            with contextlib.suppress(httpx.ReadTimeout):
                await c.post(url + "/v1/completions", json={"prompt": "a", "stream": True})
        await wait_for(lambda: sum(f.disconnects for f in fakes) == 1, timeout=3.0)
        await asyncio.sleep(0.3)
        assert sum(len(f.requests) for f in fakes) == 1


async def test_hung_instance_times_out_is_retried_and_stays_out_for_its_cooldown() -> None:
    hung, good = FakeUpstream(mode="hang"), FakeUpstream()
    settings = {"first_byte_timeout_s": 0.5, "timeout_cooldown_s": 1.5, "admin_token": "adm"}
    async with (
        upstreams(hung, good) as ups,
        router([u.url for u in ups], policy="round-robin", **settings) as (app, url),
    ):
        hung_id = ups[0].url.removeprefix("http://")
        async with httpx.AsyncClient(timeout=10) as c:
            sent = time.monotonic()
            replies = await asyncio.gather(
                c.post(url + "/v1/completions", json={"prompt": "a", "max_tokens": 2}),
                c.post(url + "/v1/completions", json={"prompt": "b", "max_tokens": 2, "stream": True}),
            )
            assert [r.status_code for r in replies] == [200, 200]
            assert all(r.headers["x-block-instance"] != hung_id for r in replies)
            assert "error" not in replies[1].text and replies[1].text.endswith("data: [DONE]\n\n")
            row = await instance_row(c, url, hung_id)
            assert row["state"] == "unhealthy" and not row["in_rotation"]
            assert "no first byte" in row["last_error"] and row["cooldown_s"] > 0
            assert time.monotonic() - sent < 0.5 + 2.0  # out within the timeout (and a generous margin)
            assert hung.disconnects == 1  # the timed-out attempt was closed, not left hanging
            # /health keeps answering 200 (every 0.1 s), but the cool-down keeps it out
            while time.monotonic() - sent < 1.2:
                assert not app.pool.instances[hung_id].healthy
                await asyncio.sleep(0.05)
            await wait_for(lambda: app.pool.instances[hung_id].healthy, timeout=3.0)
            # still hung: the next request it gets times out again and the cool-down doubles
            for _ in range(2):
                r = await c.post(url + "/v1/completions", json={"prompt": "c", "max_tokens": 2})
                assert r.status_code == 200
            row = await instance_row(c, url, hung_id)
            assert row["state"] == "unhealthy" and row["cooldown_s"] > 1.5
        text = app.metrics.render().decode()
        assert 'block_router_upstream_errors_total{kind="first_byte_timeout"} 2.0' in text


async def test_a_queue_behind_working_requests_is_not_a_hang() -> None:
    """One sequence at a time: the second request waits ~2 s for its first token, four times the
    first-byte timeout, while the first streams steadily. That instance works: no timeout, no retry."""
    profile = load_profile("tiny-fast")
    settings = EngineSettings(profile, replica_config(profile, max_num_seqs=1), noise=0.0, seed=0)
    engine = BackgroundEngine(settings).start()
    try:
        async with router([engine.url], policy="round-robin", first_byte_timeout_s=0.5) as (app, url):
            long = {"prompt": "a", "max_tokens": 1500, "ignore_eos": True, "stream": True}
            short = {"prompt": "b", "max_tokens": 2, "ignore_eos": True}
            async with httpx.AsyncClient(timeout=20) as c:
                first = asyncio.create_task(c.post(url + "/v1/completions", json=long))
                await wait_for(lambda: app.pool.routable()[0].tracker.in_flight == 1, timeout=3.0)
                await asyncio.sleep(0.1)
                queued_at = time.monotonic()
                second = await c.post(url + "/v1/completions", json=short)
                waited = time.monotonic() - queued_at
                assert (await first).text.endswith("data: [DONE]\n\n")
            assert second.status_code == 200 and waited > 0.5  # it did wait past the timeout
            assert app.metrics.retries._value.get() == 0
            assert app.pool.routable()  # still in rotation
            assert "first_byte_timeout" not in app.metrics.render().decode()
    finally:
        engine.stop()


async def test_stream_idle_timeout_ends_with_an_error_event() -> None:
    slow = FakeUpstream(tokens=5, token_delay=2.0)  # first event at once, then 2 s gaps
    async with (
        upstreams(slow) as (up,),
        router([up.url], policy="round-robin", idle_timeout_s=0.5, first_byte_timeout_s=5.0) as (app, url),
    ):
        inst = app.pool.routable()[0]
        async with httpx.AsyncClient(timeout=10) as c:
            r = await c.post(url + "/v1/completions", json={"prompt": "a", "stream": True})
        events = [e for e in r.text.split("\n\n") if e]
        assert r.status_code == 200 and events[0].startswith('data: {"choices"')
        error = orjson.loads(events[-2].removeprefix("data: "))["error"]
        assert "sent nothing for 0.5 s" in error["message"]
        assert events[-1] == "data: [DONE]"
        assert not inst.healthy  # silent for everyone over the idle time: out of rotation
        await wait_for(lambda: slow.disconnects == 1, timeout=3.0)


async def test_in_flight_gauge_stays_consistent_when_an_instance_is_deleted_with_requests() -> None:
    fake = FakeUpstream(tokens=5, token_delay=0.2)  # each stream takes about 1 s
    async with (
        upstreams(fake) as (up,),
        router([up.url], policy="round-robin", admin_token="adm") as (_, url),
    ):
        instance_id = up.url.removeprefix("http://")
        async with httpx.AsyncClient(timeout=10) as c:
            body = {"prompt": "a", "stream": True}
            streams = [asyncio.create_task(c.post(url + "/v1/completions", json=body)) for _ in range(3)]
            await wait_for(lambda: fake.running == 3, timeout=3.0)
            r = await c.delete(url + f"/instances/{instance_id}", headers={"authorization": "Bearer adm"})
            assert r.status_code == 200
            during = in_flight_values((await c.get(url + "/metrics")).text)
            assert during.get(instance_id) == 3.0  # still counted while they finish
            replies = await asyncio.gather(*streams)
            assert all(r.text.endswith("data: [DONE]\n\n") for r in replies)
            after = in_flight_values((await c.get(url + "/metrics")).text)
        assert all(v >= 0 for v in after.values()), after
        assert after.get(instance_id, 0.0) == 0.0
