"""Exact prefix-cache state of a stock vLLM instance, from the KV events it publishes over ZeroMQ.

`KvEventFeed` subscribes to one instance's event stream (see block/prefix/vllm_events.py for the wire
format) and keeps its `EventIndex`. The index is only trusted while it is in sync:

- a batch arrives with the next sequence number: applied;
- a gap (batches lost, the subscriber joined late, the high-water mark dropped some): the missed batches are
  asked for on the replay endpoint, with a bound on the wait; if they cannot all be had, the index is
  cleared and rebuilt from the events that follow;
- a lower sequence number than expected: the publisher restarted (the engine did), so its cache is empty;
- a batch or event that cannot be decoded or applied: counted, the index cleared.

After a clear that was not the engine's own (an `AllBlocksCleared` event or a restart), the index misses
the blocks stored before it, so for `resync_s` the feed reports itself out of sync and lookups fall back to
the router's approximate index. Every drop is counted by reason (`dropped`), which the router exports as
`block_router_kv_events_dropped_total{instance,reason}`. A malformed message never raises out of the feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

import msgspec
import zmq
import zmq.asyncio

from block.prefix.event_index import EventIndex
from block.prefix.vllm_events import END_OF_REPLAY, EventBatch, decode_batch, decode_sequence

log = logging.getLogger("block.fleet.kv_events")

RESYNC_S = 10.0  # after an unrecoverable gap, trust the index again once it has listened this long
REPLAY_TIMEOUT_S = 1.0  # longest wait for the replay endpoint's answer
RECEIVE_POLL_S = 0.5  # the receive loop wakes at least this often (to notice it is stopped)

Drop = Callable[[str], None]  # told the reason of each dropped message or resynchronisation


class KvEventFeed:
    def __init__(
        self,
        endpoint: str,
        replay_endpoint: str | None = None,
        topic: str = "",
        resync_s: float = RESYNC_S,
        on_drop: Drop | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint
        self.replay_endpoint = replay_endpoint
        self.topic = topic.encode()
        self.resync_s = resync_s
        self.index = EventIndex()
        self.dropped: dict[str, int] = {}
        self.batches = 0
        self.next_seq: int | None = None  # expected sequence number; None before the first batch
        self._clock = clock
        self._trusted_from = clock() + resync_s  # joining late: blocks stored before are unknown
        self._on_drop = on_drop
        self._ctx = zmq.asyncio.Context.instance()
        self._task: asyncio.Task[None] | None = None

    # -- what the router asks ----------------------------------------------------------------------

    @property
    def in_sync(self) -> bool:
        return self._clock() >= self._trusted_from

    def match_blocks(self, prefix_hashes: Sequence[int], block_size: int) -> int | None:
        """Leading blocks of the prompt this instance holds; None while out of sync (ask elsewhere)."""
        if not self.in_sync:
            return None
        return self.index.match_blocks(prefix_hashes, block_size)

    def engine_restarted(self) -> None:
        """The instance went down (health checks): whatever comes back starts with an empty cache."""
        self.index.clear()
        self.next_seq = None

    # -- running -----------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"kv-events {self.endpoint}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        sub = self._ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, self.topic)
        sub.connect(self.endpoint)
        try:
            while True:
                if not await sub.poll(RECEIVE_POLL_S * 1000):
                    continue
                frames = await sub.recv_multipart()
                await self.receive(frames)
        finally:
            sub.close(linger=0)

    async def receive(self, frames: Sequence[bytes]) -> None:
        """One published message: (topic, sequence, payload)."""
        if len(frames) != 3:
            self._resync("malformed")
            return
        try:
            seq = decode_sequence(frames[1])
            batch = decode_batch(frames[2])
        except (ValueError, msgspec.DecodeError):
            self._resync("malformed")
            return
        if self.next_seq is not None and seq > self.next_seq:
            replayed = await self._replay(self.next_seq, seq)
            if replayed is None:
                self._resync("gap")
            else:
                for missed in replayed:
                    self._apply(missed)
        elif self.next_seq is not None and seq < self.next_seq:
            self.index.clear()  # the publisher restarted: so did the engine and its cache
        self.next_seq = seq + 1
        self._apply(batch)

    def _apply(self, batch: EventBatch) -> None:
        self.batches += 1
        for event in batch.events:
            try:
                self.index.apply(event)
            except ValueError:
                self._resync("unappliable")
                return

    def _resync(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        if self._on_drop is not None:
            self._on_drop(reason)
        self.index.clear()
        self._trusted_from = self._clock() + self.resync_s
        log.warning(
            "KV events from %s: %s; index cleared, approximate for %.0f s",
            self.endpoint,
            reason,
            self.resync_s,
        )

    async def _replay(self, start: int, stop: int) -> list[EventBatch] | None:
        """Batches [start, stop) from the replay endpoint, or None when they cannot all be had in time."""
        if self.replay_endpoint is None:
            return None
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.replay_endpoint)
        got: dict[int, EventBatch] = {}
        deadline = self._clock() + REPLAY_TIMEOUT_S
        try:
            await sock.send_multipart([b"", start.to_bytes(8, "big")])
            while (left := deadline - self._clock()) > 0:
                if not await sock.poll(left * 1000):
                    break
                frames = await sock.recv_multipart()
                if len(frames) != 4:  # (empty, topic, sequence, payload)
                    return None
                seq = decode_sequence(frames[2])
                if seq == END_OF_REPLAY:
                    break
                if start <= seq < stop:
                    got[seq] = decode_batch(frames[3])
        except (ValueError, msgspec.DecodeError, zmq.ZMQError):
            return None
        finally:
            sock.close(linger=0)
        if len(got) != stop - start:
            return None
        return [got[s] for s in range(start, stop)]
