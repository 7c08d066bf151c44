"""The exact prefix index fed by vLLM-format KV events: what it holds, and how it survives lost,
malformed and restarted streams. Batches are encoded exactly as vLLM's publisher encodes them (a msgpack
array [ts, events, rank], events as maps tagged by "type", extra fields included)."""

from __future__ import annotations

import asyncio
import socket

import msgspec
import pytest
import zmq
import zmq.asyncio

from block.fleet.kv_events import KvEventFeed
from block.prefix import chain_hashes

BS = 4
_encode = msgspec.msgpack.Encoder().encode


def vhash(tokens: list[int]) -> bytes:
    """A stand-in for vLLM's own block hash: any function will do, the index never recomputes it."""
    return b"v" + str(tuple(tokens)).encode()


def stored(prompt: list[int], first_block: int, n_blocks: int) -> dict:
    blocks = [prompt[: (i + 1) * BS] for i in range(first_block, first_block + n_blocks)]
    parent = None if first_block == 0 else vhash(prompt[: first_block * BS])
    return {
        "type": "BlockStored",
        "block_hashes": [vhash(b) for b in blocks],
        "parent_block_hash": parent,
        "token_ids": prompt[first_block * BS : (first_block + n_blocks) * BS],
        "block_size": BS,
        "lora_id": None,
        "medium": "GPU",
        "lora_name": None,
    }


def removed(prompt: list[int], block: int) -> dict:
    return {"type": "BlockRemoved", "block_hashes": [vhash(prompt[: (block + 1) * BS])], "medium": "GPU"}


def frames(seq: int, *events: dict) -> list[bytes]:
    return [b"", seq.to_bytes(8, "big"), _encode([1.0, list(events), 0])]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def feed(**kw) -> tuple[KvEventFeed, Clock]:
    clock = Clock()
    f = KvEventFeed("tcp://127.0.0.1:1", resync_s=5.0, clock=clock, **kw)
    clock.now += 5.0  # past the join-late grace
    return f, clock


PROMPT = list(range(100, 100 + 5 * BS + 2))  # five full blocks and a partial one
OTHER = [7] * BS + list(range(50, 50 + 2 * BS))


async def test_stores_removals_and_clears_give_the_held_prefix_in_blocks_own_hashes() -> None:
    f, _ = feed()
    ours = chain_hashes(PROMPT, BS)
    await f.receive(frames(0, stored(PROMPT, 0, 2)))
    await f.receive(frames(1, stored(PROMPT, 2, 3), stored(OTHER, 0, 3)))
    assert f.match_blocks(ours, BS) == 5
    assert f.match_blocks(chain_hashes(OTHER, BS), BS) == 3
    assert f.match_blocks(chain_hashes(PROMPT[:BS] + [0] * BS, BS), BS) == 1  # shares the first block only
    assert f.match_blocks(ours, 16) == 0  # another block size: nothing can match
    await f.receive(frames(2, removed(PROMPT, 2)))
    assert f.match_blocks(ours, BS) == 2  # the walk stops at the first block no longer held
    await f.receive(frames(3, {"type": "AllBlocksCleared"}))
    assert f.match_blocks(ours, BS) == 0 and len(f.index) == 0
    assert f.dropped == {} and f.in_sync


async def test_a_gap_without_replay_clears_the_index_and_reports_out_of_sync_until_it_resyncs() -> None:
    drops: list[str] = []
    f, clock = feed(on_drop=drops.append)
    await f.receive(frames(0, stored(PROMPT, 0, 2)))
    await f.receive(frames(5, stored(OTHER, 0, 1)))  # 1-4 lost
    assert drops == ["gap"] and f.dropped == {"gap": 1}
    assert f.match_blocks(chain_hashes(OTHER, BS), BS) is None  # out of sync: the router asks elsewhere
    clock.now += 5.0
    assert f.match_blocks(chain_hashes(OTHER, BS), BS) == 1  # what followed the gap is indexed
    assert f.match_blocks(chain_hashes(PROMPT, BS), BS) == 0  # what came before is forgotten


@pytest.mark.parametrize(
    "bad",
    [
        [b"", b"\x00" * 8],  # two frames
        [b"", b"\x00" * 3, b"x"],  # short sequence number
        [b"", (0).to_bytes(8, "big"), b"\xc1not msgpack"],
        [b"", (0).to_bytes(8, "big"), _encode([1.0, [{"type": "NoSuchEvent"}], 0])],
        [b"", (0).to_bytes(8, "big"), _encode([1.0, [{"type": "BlockStored", "block_hashes": "x"}], 0])],
    ],
)
async def test_a_malformed_message_is_counted_never_raised(bad: list[bytes]) -> None:
    f, _ = feed()
    await f.receive(bad)
    assert f.dropped == {"malformed": 1} and not f.in_sync


async def test_an_orphan_block_or_inconsistent_event_resyncs() -> None:
    f, _ = feed()
    await f.receive(frames(0, stored(PROMPT, 2, 1)))  # its parent was never stored here
    assert f.dropped == {"unappliable": 1}
    bad = stored(PROMPT, 0, 2) | {"token_ids": PROMPT[:3]}
    await f.receive(frames(1, bad))
    assert f.dropped == {"unappliable": 2}


async def test_a_restarted_publisher_means_an_empty_cache() -> None:
    f, _ = feed()
    await f.receive(frames(0, stored(PROMPT, 0, 3)))
    await f.receive(frames(1, stored(OTHER, 0, 1)))
    await f.receive(frames(0, stored(OTHER, 0, 2)))  # sequence numbers start again
    assert f.match_blocks(chain_hashes(PROMPT, BS), BS) == 0
    assert f.match_blocks(chain_hashes(OTHER, BS), BS) == 2
    assert f.dropped == {} and f.in_sync


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_over_real_sockets_a_lost_batch_is_recovered_from_the_replay_endpoint() -> None:
    ctx = zmq.asyncio.Context.instance()
    pub_port, replay_port = free_port(), free_port()
    pub, router = ctx.socket(zmq.PUB), ctx.socket(zmq.ROUTER)
    pub.bind(f"tcp://127.0.0.1:{pub_port}")
    router.bind(f"tcp://127.0.0.1:{replay_port}")
    sent: dict[int, list[bytes]] = {}

    async def publish(seq: int, *events: dict) -> None:
        sent[seq] = frames(seq, *events)[1:]
        await pub.send_multipart([b"", *sent[seq]])

    async def serve_replay() -> None:  # as vLLM's publisher answers: every buffered batch, then the end
        client, _, start = await router.recv_multipart()
        for seq in sorted(q for q in sent if q >= int.from_bytes(start, "big")):
            await router.send_multipart([client, b"", b"", *sent[seq]])
        await router.send_multipart([client, b"", b"", (-1).to_bytes(8, "big", signed=True), b""])

    f = KvEventFeed(f"tcp://127.0.0.1:{pub_port}", f"tcp://127.0.0.1:{replay_port}", resync_s=0.0)
    replay = asyncio.create_task(serve_replay())
    f.start()
    try:
        seq = 0
        for _ in range(200):  # a SUB socket joins a moment after it connects: publish empty batches until
            await publish(seq)  # it hears one
            await asyncio.sleep(0.02)
            if f.batches:
                break
            seq += 1
        assert f.batches >= 1
        await publish(seq + 1, stored(PROMPT, 0, 1))
        sent[seq + 2] = frames(seq + 2, stored(PROMPT, 1, 1))[1:]  # buffered for replay, never published
        sent[seq + 3] = frames(seq + 3, stored(PROMPT, 2, 1))[1:]
        await publish(seq + 4, stored(PROMPT, 3, 1))
        for _ in range(200):
            if f.match_blocks(chain_hashes(PROMPT, BS), BS) == 4:
                break
            await asyncio.sleep(0.01)
        assert f.match_blocks(chain_hashes(PROMPT, BS), BS) == 4
        assert f.dropped == {}
    finally:
        await f.stop()
        replay.cancel()
        pub.close(linger=0)
        router.close(linger=0)
