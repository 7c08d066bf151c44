"""Fault injection: real `block engine` processes (tiny-fast profile) behind a real router, one fault per
test:
- kill: SIGKILL an engine mid-load;
- stop: SIGSTOP an engine mid-load (it hangs; SIGCONT in teardown);
- hang: an upstream that answers /health and /state but never a generation;
- slow: an upstream that streams a first token, then stalls past the idle timeout;
- shutdown: SIGTERM to a `block router` process whose upstream never answers.

Each asserts: no request lost that had not started streaming (all succeed via the other instances),
every cut stream ends with an error event and [DONE], the faulty instance out of rotation within the
configured timeout (GET /instances), in-flight gauges back to zero (GET /metrics); the shutdown test,
that the router exits within its drain bound. Timeouts are 1 s so the file stays short (about 30 s on a
quiet 2-core machine); every process started is stopped in teardown, by its process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import orjson
import pytest

from block.launch import ManagedServer, block_command, router_ready, start_all
from tests.router.servers import FakeUpstream, Served, router
from tests.router.test_timeouts import in_flight_values

pytestmark = pytest.mark.slow

FIRST_BYTE_S = 1.0
IDLE_S = 1.0
MARGIN_S = 2.0  # generous slack on top of a timeout, for a loaded machine
ROUTER_SETTINGS = {
    "policy": "round-robin",
    "first_byte_timeout_s": FIRST_BYTE_S,
    "idle_timeout_s": IDLE_S,
    "timeout_cooldown_s": 60.0,  # out for the rest of the test once timed out
    "admin_token": "adm",
}
ADMIN = {"authorization": "Bearer adm"}


def engine_server(seed: int) -> ManagedServer:
    args = ["engine", "--profile", "tiny-fast", "--noise", "0", "--seed", str(seed), "--log-level", "warning"]
    return block_command(f"engine-{seed}", args)


@contextlib.contextmanager
def engine_processes(*seeds: int) -> Iterator[list[ManagedServer]]:
    servers = [engine_server(s) for s in seeds]
    try:
        start_all(servers, timeout_s=60)
        yield servers
    finally:
        for s in servers:
            if s.proc is not None and s.alive():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(s.pgid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            s.stop(grace_s=5.0)


@pytest.fixture(scope="module")
def healthy_engines() -> Iterator[list[str]]:
    """Two engines that stay healthy through the module's tests."""
    with engine_processes(1, 2) as servers:
        yield [s.url for s in servers]


@dataclass
class Outcome:
    stream: bool
    status: int | None
    text: str
    instance: str | None

    @property
    def kind(self) -> str:
        """ok | cut (a stream that had started ends with an error event, then [DONE]) | lost."""
        if self.status != 200:
            return "lost"
        if not self.stream:
            return "ok" if '"choices"' in self.text else "lost"
        events = [e for e in self.text.split("\n\n") if e.strip()]
        if len(events) < 2 or events[-1] != "data: [DONE]":
            return "lost"  # a stream must always end, cut or not
        errors = [i for i, e in enumerate(events) if e.startswith('data: {"error"')]
        if not errors:
            return "ok"
        started = events[0].startswith("data: {") and not events[0].startswith('data: {"error"')
        return "cut" if errors == [len(events) - 2] and started else "lost"


async def send_load(url: str, n: int, rate: float, max_tokens: int = 300) -> list[Outcome]:
    """`n` requests at `rate` per second, every other one streamed; each runs ~0.5-1 s on an engine."""
    async with httpx.AsyncClient(timeout=30) as c:

        async def one(i: int) -> Outcome:
            await asyncio.sleep(i / rate)
            stream = i % 2 == 0
            body = {
                "model": "synthetic",
                "prompt": f"request {i} " * 8,
                "max_tokens": max_tokens,
                "ignore_eos": True,
                "stream": stream,
            }
            try:
                r = await c.post(url + "/v1/completions", json=body)
            except httpx.HTTPError as e:
                return Outcome(stream, None, repr(e), None)
            return Outcome(stream, r.status_code, r.text, r.headers.get("x-block-instance"))

        return list(await asyncio.gather(*(one(i) for i in range(n))))


def assert_nothing_lost(outcomes: list[Outcome], faulty: str) -> None:
    lost = [o for o in outcomes if o.kind == "lost"]
    assert not lost, lost[:3]
    assert all(o.instance == faulty for o in outcomes if o.kind == "cut")  # only its streams were cut
    assert all(o.kind == "ok" for o in outcomes if not o.stream)  # none had started: all retried


async def out_of_rotation_within(url: str, instance_id: str, seconds: float) -> dict:
    """Poll GET /instances until the instance is out of rotation; fails after `seconds`."""
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=5) as c:
        while True:
            rows = (await c.get(url + "/instances", headers=ADMIN)).json()["instances"]
            row = next(r for r in rows if r["id"] == instance_id)
            if not row["in_rotation"]:
                return row
            assert time.monotonic() < deadline, f"{instance_id} still in rotation after {seconds} s"
            await asyncio.sleep(0.05)


async def assert_gauges_back_to_zero(url: str) -> None:
    deadline = time.monotonic() + 5.0
    async with httpx.AsyncClient(timeout=5) as c:
        while True:
            values = in_flight_values((await c.get(url + "/metrics")).text)
            assert all(v >= 0 for v in values.values()), values
            if all(v == 0 for v in values.values()):
                return
            assert time.monotonic() < deadline, values
            await asyncio.sleep(0.05)


async def wait_in_flight(app, instance_id: str, at_least: int) -> None:  # noqa: ANN001
    deadline = time.monotonic() + 10.0
    while app.pool.instances[instance_id].tracker.in_flight < at_least:
        assert time.monotonic() < deadline, "the victim never got requests"
        await asyncio.sleep(0.01)


async def test_kill_an_engine_mid_load(healthy_engines: list[str]) -> None:
    with engine_processes(3) as (victim,):
        victim_id = victim.url.removeprefix("http://")
        async with router([*healthy_engines, victim.url], **ROUTER_SETTINGS) as (app, url):
            load = asyncio.create_task(send_load(url, n=40, rate=40))
            await wait_in_flight(app, victim_id, 3)
            victim.crash()  # SIGKILL, whole process group
            killed_at = time.monotonic()
            row = await out_of_rotation_within(url, victim_id, MARGIN_S)
            outcomes = await asyncio.wait_for(load, 60)
            assert_nothing_lost(outcomes, victim_id)
            assert row["last_error"] and time.monotonic() - killed_at < 60
            retried = app.metrics.retries._value.get()
            cut = sum(o.kind == "cut" for o in outcomes)
            assert retried + cut >= 3  # what was in flight there was either retried or cut
            await assert_gauges_back_to_zero(url)


async def test_stop_an_engine_mid_load(healthy_engines: list[str]) -> None:
    with engine_processes(4) as (victim,):
        victim_id = victim.url.removeprefix("http://")
        async with router([*healthy_engines, victim.url], **ROUTER_SETTINGS) as (app, url):
            load = asyncio.create_task(send_load(url, n=40, rate=40))
            await wait_in_flight(app, victim_id, 3)
            os.killpg(victim.pgid, signal.SIGSTOP)  # hangs mid-generation; SIGCONT in teardown
            await out_of_rotation_within(url, victim_id, FIRST_BYTE_S + MARGIN_S)
            outcomes = await asyncio.wait_for(load, 60)
            assert_nothing_lost(outcomes, victim_id)
            assert app.metrics.retries._value.get() + sum(o.kind == "cut" for o in outcomes) >= 3
            await assert_gauges_back_to_zero(url)


async def test_hung_upstream_times_out_and_stays_out(healthy_engines: list[str]) -> None:
    hung = FakeUpstream(mode="hang")
    served = await Served(hung).start()
    try:
        hung_id = served.url.removeprefix("http://")
        async with router([*healthy_engines, served.url], **ROUTER_SETTINGS) as (app, url):
            load = asyncio.create_task(send_load(url, n=30, rate=30))
            await wait_in_flight(app, hung_id, 1)
            row = await out_of_rotation_within(url, hung_id, FIRST_BYTE_S + MARGIN_S)
            assert "no first byte" in row["last_error"] and row["cooldown_s"] > 0
            outcomes = await asyncio.wait_for(load, 60)
            assert_nothing_lost(outcomes, hung_id)
            assert all(o.kind == "ok" for o in outcomes)  # nothing ever started there: all retried
            assert hung.requests and hung.disconnects == len(hung.requests)  # every attempt closed
            assert not app.pool.instances[hung_id].healthy  # /health says 200; the cool-down says no
            await assert_gauges_back_to_zero(url)
    finally:
        await served.stop()


async def test_slow_upstream_streams_are_cut_with_an_error_event(healthy_engines: list[str]) -> None:
    slow = FakeUpstream(tokens=50, token_delay=3.0)  # a first token at once, then 3 s gaps
    served = await Served(slow).start()
    try:
        slow_id = served.url.removeprefix("http://")
        async with router([*healthy_engines, served.url], **ROUTER_SETTINGS) as (app, url):
            load = asyncio.create_task(send_load(url, n=30, rate=30))
            await wait_in_flight(app, slow_id, 1)
            row = await out_of_rotation_within(url, slow_id, FIRST_BYTE_S + IDLE_S + MARGIN_S)
            outcomes = await asyncio.wait_for(load, 60)
            assert_nothing_lost(outcomes, slow_id)
            cut = [o for o in outcomes if o.kind == "cut"]
            assert cut  # its streams had started: they end with the error event
            message = orjson.loads(cut[0].text.split("\n\n")[-3].removeprefix("data: "))["error"]["message"]
            assert "sent nothing for 1 s" in message and "sent nothing" in row["last_error"]
            await assert_gauges_back_to_zero(url)
    finally:
        await served.stop()


@contextlib.asynccontextmanager
async def router_process(upstream_url: str, drain_s: float) -> AsyncIterator[ManagedServer]:
    args = [
        "router",
        "--instance",
        upstream_url,
        "--policy",
        "round-robin",
        "--first-byte-timeout-s",
        "60",
        "--idle-timeout-s",
        "60",
        "--drain-timeout-s",
        str(drain_s),
        "--log-level",
        "warning",
    ]
    server = block_command("router", args, health=router_ready(1))
    try:
        await asyncio.to_thread(server.start, 60)  # this loop serves the upstream meanwhile
        yield server
    finally:
        await asyncio.to_thread(server.stop, 5.0)


async def test_sigterm_drains_then_cuts_and_exits_within_the_bound() -> None:
    """The upstream never answers a non-stream and stalls every stream after its first token (both
    would wait 60 s): after SIGTERM the router drains for 1.5 s, then answers 503 and ends the stream
    with an error event, and exits."""
    drain_s = 1.5
    stalling = FakeUpstream(tokens=50, token_delay=30.0)
    served = await Served(stalling).start()
    try:
        async with router_process(served.url, drain_s) as proc, httpx.AsyncClient(timeout=30) as c:
            url = proc.url
            whole = asyncio.create_task(
                c.post(url + "/v1/completions", json={"prompt": "a", "max_tokens": 5})
            )
            async with c.stream("POST", url + "/v1/completions", json={"prompt": "b", "stream": True}) as r:
                chunks = r.aiter_text()
                first = await asyncio.wait_for(anext(chunks), 10)  # the stream has started
                assert first.startswith("data: {")
                await asyncio.sleep(0.2)  # the non-stream is in flight too
                assert stalling.running == 2
                proc.proc.send_signal(signal.SIGTERM)
                sent_at = time.monotonic()
                await asyncio.sleep(0.5)  # draining now: no new connections
                async with httpx.AsyncClient(timeout=2) as other:
                    with pytest.raises(httpx.ConnectError):
                        await other.get(url + "/health")
                rest = "".join([t async for t in chunks])
                stream_ended = time.monotonic() - sent_at
            reply = await asyncio.wait_for(whole, 10)
            code = await asyncio.to_thread(proc.proc.wait, drain_s + 10)
            exited = time.monotonic() - sent_at
        assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
        assert drain_s * 0.9 <= stream_ended < drain_s + MARGIN_S  # drained first, then cut
        assert exited < drain_s + MARGIN_S + 1.0  # the bound: drain, cut, lifespan shutdown
        error = orjson.loads(rest.split("\n\n")[-3].removeprefix("data: "))["error"]
        assert error["code"] == "shutting_down" and rest.endswith("data: [DONE]\n\n")
        assert reply.status_code == 503
        assert reply.json()["error"] == {
            "message": "the router is shutting down",
            "type": "ServiceUnavailableError",
            "param": None,
            "code": "shutting_down",
        }
        await asyncio.sleep(0.2)
        assert stalling.running == 0 and stalling.disconnects == 2  # the upstream requests were closed
    finally:
        await served.stop()
