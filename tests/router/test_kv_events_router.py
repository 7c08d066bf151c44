"""The router subscribes to each stock vLLM instance's KV events (--kv-events): the index is listed in
GET /instances, malformed messages are counted on /metrics and never crash anything, and endpoints are
validated like instance URLs."""

from __future__ import annotations

import asyncio
import socket

import httpx
import msgspec
import pytest
import zmq
import zmq.asyncio
from prometheus_client.parser import text_string_to_metric_families

from block.router.config import RouterConfig
from tests.router.servers import FakeUpstream, router, upstreams

_encode = msgspec.msgpack.Encoder().encode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def batch(seq: int, tokens: list[int]) -> list[bytes]:
    event = {
        "type": "BlockStored",
        "block_hashes": [b"h%d" % seq],
        "parent_block_hash": None,
        "token_ids": tokens,
        "block_size": len(tokens),
        "lora_id": None,
        "medium": "GPU",
    }
    return [b"", seq.to_bytes(8, "big"), _encode([0.0, [event], 0])]


async def test_the_router_keeps_each_instances_index_and_counts_malformed_events() -> None:
    ctx = zmq.asyncio.Context.instance()
    port = free_port()
    pub = ctx.socket(zmq.PUB)
    pub.bind(f"tcp://127.0.0.1:{port}")
    try:
        async with upstreams(FakeUpstream(block=False)) as (up,):
            kv = {up.url: f"tcp://127.0.0.1:{port}"}
            async with (
                router([up.url], policy="llumnix", kv_events=kv) as (app, url),
                httpx.AsyncClient() as c,
            ):
                inst = next(iter(app.pool.instances.values()))
                assert inst.kv_events is not None
                for seq in range(300):  # the subscription joins a moment after connecting
                    await pub.send_multipart(batch(seq, [seq, 1, 2, 3]))
                    await asyncio.sleep(0.01)
                    if inst.kv_events.batches >= 2:
                        break
                listed = (await c.get(url + "/instances")).json()["instances"][0]["kv_events"]
                assert listed["indexed_blocks"] >= 2 and listed["dropped"] == {}
                await pub.send_multipart([b"", b"\x00" * 8, b"\xc1 not msgpack"])
                for _ in range(300):
                    if inst.kv_events.dropped:
                        break
                    await asyncio.sleep(0.01)
                text = (await c.get(url + "/metrics")).text
                dropped = {
                    s.labels["reason"]: s.value
                    for f in text_string_to_metric_families(text)
                    for s in f.samples
                    if s.name == "block_router_kv_events_dropped_total"
                }
                assert dropped == {"malformed": 1.0}
                listed = (await c.get(url + "/instances")).json()["instances"][0]["kv_events"]
                assert listed["in_sync"] is False and listed["indexed_blocks"] == 0
                assert (await c.get(url + "/health")).status_code == 200  # the router carries on
    finally:
        pub.close(linger=0)


@pytest.mark.parametrize(
    "endpoint",
    ["http://127.0.0.1:5557", "tcp://127.0.0.1", "tcp://user@127.0.0.1:5557", "tcp://127.0.0.1:5557/x"],
)
def test_malformed_endpoints_are_refused_before_anything_starts(endpoint: str) -> None:
    with pytest.raises(ValueError, match="KV events endpoint"):
        RouterConfig(instances=["http://127.0.0.1:8000"], kv_events={"http://127.0.0.1:8000": endpoint})


def test_an_endpoint_outside_the_allow_list_is_refused() -> None:
    with pytest.raises(ValueError, match="not in --allowed-upstreams"):
        RouterConfig(
            instances=["http://10.0.0.1:8000"],
            allowed_upstreams=["10.0.0.0/8"],
            kv_events={"http://10.0.0.1:8000": "tcp://10.0.0.1:5557,tcp://192.168.1.1:5558"},
        )
