"""Request listeners: one class plus registration hears every routed / token / finished event, in the
router (real HTTP) and in the simulator alike, and the stock-vLLM source keeps its own record from them."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx

from block.fleet.listeners import Listeners, RequestListener, Routed
from block.fleet.sources import VllmMetrics
from block.request import RoutingRequest
from block.sim.simulator import Cluster
from tests.router.servers import FakeUpstream, router, upstreams
from tests.sim.helpers import signature, small_config, small_workload


class Journal(RequestListener):
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, int]] = []  # (event, instance, request id, tokens)
        self.forecasts: list[object] = []

    def routed(self, instance: str, routed: Routed) -> None:
        self.events.append(("routed", instance, routed.request.id, 0))
        self.forecasts.append(routed.forecast)

    def tokens(self, instance: str, request_id: str, count: int, at: float) -> None:
        self.events.append(("tokens", instance, request_id, count))

    def finished(self, instance: str, request_id: str, at: float) -> None:
        self.events.append(("finished", instance, request_id, 0))


class OnlyFinished(RequestListener):
    def finished(self, instance: str, request_id: str, at: float) -> None:
        pass


def test_the_fan_out_calls_a_listener_only_for_the_events_it_overrides() -> None:
    journal, quiet = Journal(), OnlyFinished()
    listeners = Listeners(journal, quiet)
    assert listeners.on_routed == [journal] and listeners.on_tokens == [journal]
    assert listeners.on_finished == [journal, quiet]
    listeners.routed("a", Routed(RoutingRequest(10, 5, id="r1"), 0.0))
    listeners.tokens("a", "r1", 3, 0.1)
    listeners.finished("a", "r1", 0.2)
    assert [e[0] for e in journal.events] == ["routed", "tokens", "finished"]
    listeners.remove(journal)
    assert listeners.on_routed == [] and listeners.on_finished == [quiet]


async def test_a_router_listener_hears_a_stream_and_the_vllm_source_keeps_its_record() -> None:
    fake = FakeUpstream(block=False, tokens=6, token_delay=0.05)
    async with upstreams(fake) as (up,), router([up.url], policy="least-requests") as (app, url):
        inst = next(iter(app.pool.instances.values()))
        assert isinstance(inst.source, VllmMetrics) and inst.kind == "vllm"
        journal = Journal()
        app.pool.listeners.add(journal)
        async with httpx.AsyncClient(timeout=10) as c:
            body = {"prompt": "a b c", "max_tokens": 6, "stream": True}
            async with c.stream("POST", url + "/v1/completions", json=body) as r:
                assert r.status_code == 200
                seen, checked = 0, False
                async for chunk in r.aiter_raw():
                    seen += chunk.count(b"data: {")
                    if seen >= 3 and not checked:  # mid-stream: the source heard the route and tokens
                        checked = True
                        record = next(iter(inst.source.sent.values()))
                        assert record.prompt_tokens >= 3 and record.expected_output_tokens == 6
                        for _ in range(100):  # bounded: the relay may be one chunk behind the client
                            if record.streamed_tokens >= 3:
                                break
                            await asyncio.sleep(0.01)
                        assert record.streamed_tokens >= 3
                assert checked
        for _ in range(100):
            if journal.events and journal.events[-1][0] == "finished":
                break
            await asyncio.sleep(0.01)
    kinds = [e[0] for e in journal.events]
    assert kinds[0] == "routed" and kinds[-1] == "finished" and set(kinds[1:-1]) == {"tokens"}
    assert {e[2] for e in journal.events} == {journal.events[0][2]}  # all about the one request
    assert sum(e[3] for e in journal.events) == 6  # every streamed token event, counted once
    assert journal.forecasts == [None]  # least-requests forecasts nothing
    assert inst.source.sent == {}  # finished: forgotten


def test_a_simulator_listener_hears_every_request_and_changes_nothing() -> None:
    requests = small_workload(150, qps=25)
    config = small_config(policy="block", instances=3)
    plain = Cluster(config).run(requests, None)
    cluster = Cluster(replace(config))
    journal = Journal()
    cluster.listeners.add(journal)
    heard = cluster.run(requests, None)
    assert signature(heard) == signature(plain)
    routed = [e for e in journal.events if e[0] == "routed"]
    finished = [e for e in journal.events if e[0] == "finished"]
    assert len(routed) == len(finished) == len(requests)
    assert {e[2] for e in routed} == {e[2] for e in finished}
    assert all(f is not None for f in journal.forecasts)  # the block policy's forecast for the chosen
