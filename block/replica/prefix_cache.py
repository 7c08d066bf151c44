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

The free queue holds anonymous blocks and records; anonymous blocks are interchangeable, so the queue
is a doubly linked list of the free records, each with `gap`, the anonymous blocks just in front of
it, and `tail`, the anonymous blocks after the last record. Its length is the KV cache's free count,
kept by the caller (KVCache, FastReplica), which calls `take` for every block it allocates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def prompt_hashes(hashes: Sequence[int], prompt_tokens: int, block_size: int) -> tuple[int, ...]:
    """The hashes that name blocks of the prompt (a decode never fills a prompt block, and a list
    longer than the prompt is someone else's mistake)."""
    return tuple(hashes[: prompt_tokens // block_size])


class CachedBlock:
    """A full block with an identity: its hash, the requests holding it and its place in the free queue."""

    __slots__ = ("hash", "ref", "prev", "next", "gap", "free")

    def __init__(self, block_hash: int, ref: int = 1) -> None:
        self.hash = block_hash
        self.ref = ref
        self.prev: CachedBlock | None = None
        self.next: CachedBlock | None = None
        self.gap = 0  # anonymous free blocks just in front of it (while free)
        self.free = False  # in the free queue


class PrefixCache:
    __slots__ = ("table", "first", "last", "tail", "num_free_cached")

    def __init__(self, free_blocks: int) -> None:
        self.table: dict[int, list[CachedBlock]] = {}  # hash -> copies, oldest first
        self.first: CachedBlock | None = None  # free queue front (evicted first)
        self.last: CachedBlock | None = None
        self.tail = free_blocks  # anonymous free blocks after the last free record
        self.num_free_cached = 0  # records in the free queue

    # -- lookups -------------------------------------------------------------------------------

    def lookup(self, hashes: Sequence[int], max_blocks: int) -> list[CachedBlock]:
        """The longest cached prefix of `hashes`, at most `max_blocks` blocks."""
        table = self.table
        hit: list[CachedBlock] = []
        for h in hashes[:max_blocks]:
            copies = table.get(h)
            if copies is None:
                break
            hit.append(copies[0])
        return hit

    def num_cached(self, hashes: Sequence[int]) -> int:
        """How many leading blocks of `hashes` are cached (held or free)."""
        table, n = self.table, 0
        for h in hashes:
            if h not in table:
                break
            n += 1
        return n

    # -- the free queue ------------------------------------------------------------------------

    def touch(self, hit: Iterable[CachedBlock]) -> int:
        """A request takes the records of its cache hit; returns how many left the free queue."""
        taken = 0
        for b in hit:
            if b.ref == 0:
                self._unlink(b)
                taken += 1
            b.ref += 1
        return taken

    def take(self, n: int) -> None:
        """`n` blocks are allocated from the queue's front, evicting the records among them."""
        table = self.table
        while n > 0:
            b = self.first
            if b is None:
                self.tail -= n
                return
            if n <= b.gap:
                b.gap -= n
                return
            n -= b.gap + 1
            b.gap = 0
            self._unlink(b)
            copies = table[b.hash]
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
            copies.append(b)
        return b

    def release(self, held: Sequence[CachedBlock], anonymous: int) -> int:
        """A request frees its blocks, last first: `anonymous` ones after its `held` records.
        Returns how many blocks joined the free queue."""
        self.tail += anonymous
        freed = anonymous
        for b in reversed(held):
            b.ref -= 1
            if b.ref == 0:
                self._append(b)
                freed += 1
        return freed

    def free_queue(self) -> list[tuple[int, int]]:
        """The free records in eviction order, as (anonymous blocks in front, hash)."""
        out = []
        b = self.first
        while b is not None:
            out.append((b.gap, b.hash))
            b = b.next
        return out

    def _append(self, b: CachedBlock) -> None:
        b.gap, self.tail = self.tail, 0
        b.prev, b.next = self.last, None
        if self.last is None:
            self.first = b
        else:
            self.last.next = b
        self.last = b
        b.free = True
        self.num_free_cached += 1

    def _unlink(self, b: CachedBlock) -> None:
        nxt = b.next
        if nxt is None:
            self.tail += b.gap
            self.last = b.prev
        else:
            nxt.gap += b.gap
            nxt.prev = b.prev
        if b.prev is None:
            self.first = nxt
        else:
            b.prev.next = nxt
        b.prev = b.next = None
        b.gap = 0
        b.free = False
        self.num_free_cached -= 1

    # -- snapshots -----------------------------------------------------------------------------

    @classmethod
    def restore(
        cls,
        free_blocks: int,
        held: Iterable[Sequence[int]],
        free_queue: Sequence[tuple[int, int]],
    ) -> tuple[PrefixCache, list[list[CachedBlock]]]:
        """Rebuild from a snapshot: each request's held hashes (its leading cached blocks), and the
        free records in queue order. Requests holding the same hash share one record (copies made
        independently are merged: a snapshot does not tell them apart). Returns the cache and each
        request's records."""
        cache = cls(0)
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
        in_queue = 0
        for gap, h in free_queue:
            b = cache.register(h)
            b.ref = 0
            cache.tail = gap
            cache._append(b)
            in_queue += gap + 1
        cache.tail = max(0, free_blocks - in_queue)
        return cache, out
