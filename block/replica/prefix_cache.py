"""The prefix cache of a paged KV cache, after vLLM V1's block pool.

Only full blocks whose identity a request carries (`Request.prefix_hashes`: the chained hashes of its
prompt's full blocks) are cached; every other block (a prompt's partial last block, generated tokens)
is anonymous and only counted. A cached block is a `CachedBlock` record:

- a request registers a record for each full block of its prompt as soon as the step that computes
  the block is scheduled (vLLM caches at allocation: a request admitted later in the same step may
  already hit it, its KV is written in the same forward pass before attention reads it);
- records are reference counted: a hit shares a record with every request holding it;
- a record whose count falls to zero stays cached in the free queue, the LRU order in which free
  blocks are reused. Freeing a request appends its blocks last block first, so a prefix's tail is
  evicted before its head. Allocating a new block pops the queue's front: an anonymous free block,
  or a cached record, which is then evicted (forgotten). A hit on a free record takes it out of
  the queue;
- two requests that compute the same block independently (neither was cached when they started)
  hold two copies; a lookup finds the older one.

The free queue is a log of positions: a block freed gets the next position `end`, allocation consumes
positions from `front`, so a free record is evicted exactly when `front` passes its position, without
being touched (no work per evicted block: a cache-heavy forecast allocates hundreds of blocks). A hit
on a free record takes its position out (`removed`, skipped by the front). Anonymous free blocks are
only positions. The queue's length is the KV cache's free count, kept by the caller (KVCache,
FastReplica), which calls `take` for every block it allocates. Evicted records leave the hash table
when a lookup meets them, or (`collect`, for long-lived caches) when the front passes them.
"""

from __future__ import annotations

import bisect
import heapq
from collections import deque
from collections.abc import Iterable, Sequence


def prompt_hashes(hashes: Sequence[int], prompt_tokens: int, block_size: int) -> tuple[int, ...]:
    """The hashes that name blocks of the prompt (a decode never fills a prompt block, and a list
    longer than the prompt is someone else's mistake)."""
    return tuple(hashes[: prompt_tokens // block_size])


class CachedBlock:
    """A full block with an identity: its hash, the requests holding it, its free-queue position."""

    __slots__ = ("hash", "ref", "pos")

    def __init__(self, block_hash: int, ref: int = 1, pos: int = -1) -> None:
        self.hash = block_hash
        self.ref = ref
        self.pos = pos  # while free (ref 0): its position in the free queue; cached while >= front


class PrefixCache:
    __slots__ = ("table", "front", "end", "removed", "log", "changes", "_queue")

    def __init__(self, free_blocks: int, collect: bool = True) -> None:
        self.table: dict[int, list[CachedBlock]] = {}  # hash -> copies, oldest first (some evicted)
        self.front = 0  # the next position an allocation takes
        self.end = free_blocks  # the next position a freed block gets
        self.removed: list[int] = []  # heap: positions >= front whose record a hit took back
        # (position, record) of freed records in position order, to forget them once evicted
        self.log: deque[tuple[int, CachedBlock]] | None = deque() if collect else None
        # what changed the free queue so far, and free_queue's last answer with the count it was for: a
        # router's snapshots come more often than an instance's steps, so most find it unchanged
        self.changes = 0
        self._queue: tuple[int, list[tuple[int, int]]] | None = None

    # -- lookups -------------------------------------------------------------------------------

    def lookup(self, hashes: Sequence[int], max_blocks: int) -> list[CachedBlock]:
        """The longest cached prefix of `hashes`, at most `max_blocks` blocks."""
        table, front = self.table, self.front
        hit: list[CachedBlock] = []
        for h in hashes[:max_blocks]:
            copies = table.get(h)
            if copies is None:
                break
            for b in copies:
                if b.ref or b.pos >= front:
                    hit.append(b)
                    break
            else:
                del table[h]  # every copy was evicted
                break
        return hit

    def num_cached(self, hashes: Sequence[int]) -> int:
        """How many leading blocks of `hashes` are cached (held or free)."""
        return len(self.lookup(hashes, len(hashes)))

    # -- the free queue ------------------------------------------------------------------------

    def touch(self, hit: Iterable[CachedBlock]) -> int:
        """A request takes the records of its cache hit; returns how many left the free queue."""
        taken = 0
        for b in hit:
            if b.ref == 0:
                heapq.heappush(self.removed, b.pos)
                b.pos = -1
                taken += 1
            b.ref += 1
        self.changes += taken
        return taken

    def take(self, n: int) -> None:
        """`n` blocks are allocated from the queue's front, evicting the records among them."""
        if n <= 0:
            return
        self.changes += 1
        target = self.front + n
        removed = self.removed
        while removed and removed[0] < target:
            heapq.heappop(removed)
            target += 1  # a position taken back holds no block: one more to go
        self.front = target
        log = self.log
        if log:
            table = self.table
            while log and log[0][0] < target:
                pos, b = log.popleft()
                if b.pos == pos:  # still free there: evicted
                    copies = table.get(b.hash)
                    if copies is not None and b in copies:
                        copies.remove(b)
                        if not copies:
                            del table[b.hash]

    def register(self, block_hash: int) -> CachedBlock:
        """A held anonymous block became full and gets its identity."""
        b = CachedBlock(block_hash)
        copies = self.table.get(block_hash)
        if copies is None:
            self.table[block_hash] = [b]
        else:
            front = self.front
            copies[:] = [c for c in copies if c.ref or c.pos >= front]  # drop evicted ones
            copies.append(b)
        return b

    def release(self, held: Sequence[CachedBlock], anonymous: int) -> int:
        """A request frees its blocks, last first: `anonymous` ones after its `held` records.
        Returns how many blocks joined the free queue."""
        end = self.end + anonymous
        freed = anonymous
        log = self.log
        for b in reversed(held):
            b.ref -= 1
            if b.ref == 0:
                b.pos = end
                if log is not None:
                    log.append((end, b))
                end += 1
                freed += 1
        self.end = end
        self.changes += 1
        return freed

    def free_queue(self) -> list[tuple[int, int]]:
        """The free records in eviction order, as (anonymous blocks in front, hash). Unchanged since the
        last call: the same list (read it, do not change it)."""
        kept = self._queue
        if kept is not None and kept[0] == self.changes:
            return kept[1]
        queue = self._free_queue()
        self._queue = (self.changes, queue)
        return queue

    def _free_queue(self) -> list[tuple[int, int]]:
        front = self.front
        # (position, record) in position order; a record is free there while its pos is that position
        entries: Iterable[tuple[int, CachedBlock]] = (
            self.log
            if self.log is not None
            else sorted(((b.pos, b) for cs in self.table.values() for b in cs if b.ref == 0), key=_position)
        )
        out: list[tuple[int, int]] = []
        append, at = out.append, front
        if not self.removed:
            # the usual case (no hit took a free record back), in one pass: a snapshot is taken at every
            # router refresh, and this was a tenth of `block simulate bench` (a)
            for pos, b in entries:
                if b.pos == pos and pos >= front:
                    append((pos - at, b.hash))
                    at = pos + 1
            return out
        removed, i = sorted(self.removed), 0
        for pos, b in entries:
            if b.pos == pos and pos >= front:
                j = bisect.bisect_left(removed, pos, i)
                append((pos - at - (j - i), b.hash))
                at, i = pos + 1, j
        return out

    # -- snapshots -----------------------------------------------------------------------------

    @classmethod
    def restore(
        cls,
        free_blocks: int,
        held: Iterable[Sequence[int]],
        free_queue: Sequence[tuple[int, int]],
        collect: bool = True,
    ) -> tuple[PrefixCache, list[list[CachedBlock]]]:
        """Rebuild from a snapshot: each request's held hashes (its leading cached blocks), and the
        free records in queue order. Requests holding the same hash share one record (copies made
        independently are merged: a snapshot does not tell them apart). Returns the cache and each
        request's records."""
        cache = cls(0, collect)
        records: dict[int, CachedBlock] = {}
        out = []
        for hashes in held:
            mine = []
            for h in hashes:
                b = records.get(h)
                if b is None:
                    b = records[h] = cache.register(h)
                else:
                    b.ref += 1
                mine.append(b)
            out.append(mine)
        pos, log = 0, cache.log
        for gap, h in free_queue:
            pos += gap
            b = cache.register(h)
            b.ref, b.pos = 0, pos
            if log is not None:
                log.append((pos, b))
            pos += 1
        cache.end = max(pos, free_blocks)
        return cache, out


def _position(entry: tuple[int, CachedBlock]) -> int:
    return entry[0]
