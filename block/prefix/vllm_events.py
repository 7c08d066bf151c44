"""vLLM's KV-cache events as they arrive on the wire, decoded with msgspec.

A vLLM server started with `--kv-events-config '{"enable_kv_cache_events": true, "publisher": "zmq",
"endpoint": "tcp://*:PORT", "replay_endpoint": "tcp://*:PORT2"}'` publishes, after each engine step that
changed its prefix cache, one ZeroMQ multipart message: (topic, sequence number as 8 big-endian bytes,
msgpack payload). The payload is a batch, encoded as an array [timestamp, events, data-parallel rank];
each event is a map tagged by its `type`:

- `BlockStored`: full blocks entered the cache: their hashes, the hash of the block before the first
  of them (None at the start of a prompt), their tokens (block_size per block) and the block size;
- `BlockRemoved`: blocks were evicted;
- `AllBlocksCleared`: the whole cache was reset.

The replay socket (ROUTER) answers a request carrying a start sequence number with every buffered batch
from there, each as (empty, topic, sequence, payload), then an end marker whose sequence is -1.

Only the fields Block uses are declared; unknown fields (LoRA, medium, group, ...) are ignored, so newer
vLLM releases that add fields still decode. Block hashes are bytes (the sha256 algorithms) or ints.
"""

from __future__ import annotations

import msgspec

END_OF_REPLAY = -1


class BlockStored(msgspec.Struct, tag=True, forbid_unknown_fields=False):
    block_hashes: list[bytes | int]
    parent_block_hash: bytes | int | None
    token_ids: list[int]
    block_size: int


class BlockRemoved(msgspec.Struct, tag=True, forbid_unknown_fields=False):
    block_hashes: list[bytes | int]


class AllBlocksCleared(msgspec.Struct, tag=True, forbid_unknown_fields=False):
    pass


KVEvent = BlockStored | BlockRemoved | AllBlocksCleared


class EventBatch(msgspec.Struct, array_like=True):
    ts: float
    events: list[KVEvent]
    data_parallel_rank: int | None = None


_decoder = msgspec.msgpack.Decoder(EventBatch)


def decode_batch(payload: bytes) -> EventBatch:
    """One published batch; raises msgspec.DecodeError (a ValueError) when it is not one."""
    return _decoder.decode(payload)


def decode_sequence(raw: bytes) -> int:
    if len(raw) != 8:
        raise ValueError(f"sequence number of {len(raw)} bytes, expected 8")
    return int.from_bytes(raw, "big", signed=True)
