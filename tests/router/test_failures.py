"""Health removal and return, retry before the first byte, mid-stream cuts, no instance at all."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson

from tests.router.servers import FakeUpstream, Served, bound_socket, router, upstreams


async def wait_for(predicate, timeout: float = 3.0) -> float:  # noqa: ANN001
    """Seconds until predicate() held; fails the test after `timeout` (bounded polling)."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, "condition not reached in time"
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def test_dead_instance_leaves_rotation_within_1s_and_returns() -> None:
    fakes = [FakeUpstream(), FakeUpstream()]
    async with (
        upstreams(*fakes) as ups,
        router([u.url for u in ups], policy="round-robin", health_interval=0.5) as (app, url),
    ):
        victim = app.pool.instances[ups[1].url.removeprefix("http://")]
        port = ups[1].port
        await ups[1].stop()  # connection refused from now on
        took = await wait_for(lambda: not victim.healthy, timeout=2.0)
        assert took < 1.0
        text = app.metrics.render().decode()
        assert f'block_router_instance_healthy{{instance="{victim.id}"}} 0.0' in text
        async with httpx.AsyncClient(timeout=5) as c:
            for _ in range(4):
                r = await c.post(url + "/v1/completions", json={"prompt": "a", "max_tokens": 1})
                assert r.status_code == 200 and r.headers["x-block-instance"] != victim.id
            back = await Served(fakes[1], port=port).start()
            try:
                await wait_for(lambda: victim.healthy, timeout=2.0)
                seen = set()
                for _ in range(4):
                    r = await c.post(url + "/v1/completions", json={"prompt": "a", "max_tokens": 1})
                    seen.add(r.headers["x-block-instance"])
                assert victim.id in seen
            finally:
                await back.stop()


async def test_a_dying_server_that_only_times_out_does_not_rejoin() -> None:
    """A SIGKILLed server still tearing down its memory keeps its listening socket: connects succeed,
    nothing answers. A timeout keeps a busy instance in rotation, but must never bring one back."""
    fakes = [FakeUpstream(), FakeUpstream()]
    async with (
        upstreams(*fakes) as ups,
        router([u.url for u in ups], policy="round-robin", health_interval=0.1) as (app, _),
    ):
        victim = app.pool.instances[ups[1].url.removeprefix("http://")]
        port = ups[1].port
        await ups[1].stop()
        mute = bound_socket(port)
        mute.listen(64)  # the kernel completes handshakes; no one ever reads
        try:
            await wait_for(lambda: not victim.healthy, timeout=2.0)
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:  # ~10 health checks, each a timeout
                victim.data_at = time.monotonic()  # as if an older stream from it still delivered bytes
                assert not victim.healthy
                await asyncio.sleep(0.02)
        finally:
            mute.close()


async def test_unhealthy_status_takes_instance_out() -> None:
    fakes = [FakeUpstream(), FakeUpstream()]
    async with upstreams(*fakes) as ups, router([u.url for u in ups], policy="round-robin") as (app, _):
        fakes[0].healthy = False
        inst = app.pool.instances[ups[0].url.removeprefix("http://")]
        await wait_for(lambda: not inst.healthy, timeout=1.0)
        fakes[0].healthy = True
        await wait_for(lambda: inst.healthy, timeout=1.0)


async def test_retry_on_500_and_on_close_before_first_byte() -> None:
    for mode in ("status500", "close_first"):
        bad, good = FakeUpstream(mode=mode), FakeUpstream()
        async with (
            upstreams(bad, good) as ups,
            router([u.url for u in ups], policy="round-robin") as (app, url),
        ):
            async with httpx.AsyncClient(timeout=5) as c:
                for _ in range(4):
                    r = await c.post(
                        url + "/v1/completions", json={"prompt": "a", "max_tokens": 2, "stream": True}
                    )
                    assert r.status_code == 200, mode
                    assert r.headers["x-block-instance"] == ups[1].url.removeprefix("http://")
                    assert r.text.endswith("data: [DONE]\n\n") and "error" not in r.text
            assert len(bad.requests) >= 2  # round robin sent some there first: those were retried
            assert app.metrics.retries._value.get() == len(bad.requests)
            await asyncio.sleep(0.05)
            assert all(i.tracker.in_flight == 0 for i in app.pool.instances.values())


async def test_retries_at_most_twice_then_502() -> None:
    fakes = [FakeUpstream(mode="status500") for _ in range(4)]
    async with upstreams(*fakes) as ups, router([u.url for u in ups], policy="round-robin") as (app, url):
        async with httpx.AsyncClient(timeout=5) as c:
            r = await c.post(url + "/v1/completions", json={"prompt": "a"})
        assert r.status_code == 502
        assert r.json()["error"]["code"] == "upstream_error"
        assert sum(len(f.requests) for f in fakes) == 3  # first try + two retries


async def test_a_lone_instance_that_failed_once_is_tried_again() -> None:
    fake = FakeUpstream(fail_first=1)
    async with upstreams(fake) as (up,), router([up.url], policy="round-robin") as (app, url):
        async with httpx.AsyncClient(timeout=5) as c:
            r = await c.post(url + "/v1/completions", json={"prompt": "a", "max_tokens": 2})
        assert r.status_code == 200
        assert len(fake.requests) == 2
        assert app.metrics.retries._value.get() == 1


async def test_connection_refused_is_retried_elsewhere() -> None:
    good = FakeUpstream()
    dead = Served(FakeUpstream())
    await dead.start()
    dead_url = dead.url
    async with (
        upstreams(good) as (up,),
        router([dead_url, up.url], policy="round-robin", health_interval=5.0) as (app, url),
    ):
        await dead.stop()  # dies between health checks: the proxy finds out first
        async with httpx.AsyncClient(timeout=5) as c:
            codes = [
                (await c.post(url + "/v1/completions", json={"prompt": "a"})).status_code for _ in range(4)
            ]
        assert codes == [200] * 4
        assert not app.pool.instances[dead_url.removeprefix("http://")].healthy  # passive check took it out


async def test_mid_stream_cut_ends_with_error_event_then_done() -> None:
    fake = FakeUpstream(mode="cut", cut_after=2, tokens=5)
    async with upstreams(fake) as (up,), router([up.url], policy="round-robin") as (app, url):
        async with httpx.AsyncClient(timeout=5) as c:
            r = await asyncio.wait_for(
                c.post(url + "/v1/completions", json={"prompt": "a", "stream": True}), timeout=5
            )
        assert r.status_code == 200
        events = [e for e in r.text.split("\n\n") if e]
        assert events[0].startswith("data: {") and events[1].startswith("data: {")
        error = orjson.loads(events[-2].removeprefix("data: "))
        assert error["error"]["type"] == "InternalServerError" and error["error"]["code"] == "upstream_error"
        assert events[-1] == "data: [DONE]"
        await asyncio.sleep(0.05)
        assert app.pool.routable()[0].tracker.in_flight == 0


async def test_no_healthy_instance_is_503() -> None:
    fake = FakeUpstream(healthy=False)
    async with upstreams(fake) as (up,), router([up.url], ready=0, policy="block") as (_, url):  # noqa: SIM117
        async with httpx.AsyncClient(timeout=5) as c:
            r = await c.post(url + "/v1/completions", json={"prompt": "a"})
            assert r.status_code == 503
            assert r.json()["error"]["code"] == "no_healthy_instance"
            assert (await c.get(url + "/v1/models")).status_code == 503
            assert (await c.get(url + "/health")).status_code == 503


async def test_client_disconnect_mid_stream_releases_the_request() -> None:
    fake = FakeUpstream(tokens=200, token_delay=0.01)
    async with upstreams(fake) as (up,), router([up.url], policy="round-robin") as (app, url):
        inst = app.pool.routable()[0]
        async with httpx.AsyncClient(timeout=5) as c:  # noqa: SIM117
            async with c.stream("POST", url + "/v1/completions", json={"prompt": "a", "stream": True}) as r:
                async for _ in r.aiter_raw():
                    break
        await wait_for(lambda: inst.tracker.in_flight == 0, timeout=2.0)
        await wait_for(lambda: fake.running == 0, timeout=2.0)
