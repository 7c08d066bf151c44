"""The prefix cache a forecast starts from, prepared once per snapshot (the Forecaster keeps it).

Rebuilding every cached block of a snapshot for every forecast would cost more than the forecast
(a busy instance holds thousands). But a block's identity only matters to a request that may look it
up: the forecast knows all of them (the snapshot's requests, those routed since, the candidate), so a
block whose hash no other request's prompt has, and that no free copy shares, is *private*: it can be
counted as an anonymous block. Block hashes are chained, so the private blocks of a prompt are a
suffix of its blocks: each request keeps records for its leading *wanted* blocks and a count of the
private ones after them (FastReplica's `implicit`). Two cases make a private block matter after all,
and both are exact:

- the candidate's prompt shares it (the next turn of a conversation running now): `start` gives the
  blocks the candidate shares their records, per forecast;
- its holder is preempted and comes back for its own prompt: FastReplica gives the blocks their
  records when it frees them (they were private: no other record of them exists).

Free cached blocks no request wants are anonymous free blocks, unless the candidate wants them.
tests/predictor/test_skip_ahead.py keeps forecasts from this start equal to the replica rebuilt whole.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from itertools import chain
from operator import itemgetter

from block.replica.prefix_cache import CachedBlock, PrefixCache


class PrefixStart:
    def __init__(
        self,
        held_hashes: list[tuple[int, ...]],
        all_hashes: Sequence[tuple[int, ...]],
        free_cached: Sequence[tuple[int, int]],
    ) -> None:
        """`held_hashes`: each loaded request's held blocks (the first computed // block_size of its
        prompt's hashes), in load order; `all_hashes`: the prompt hashes of every request the
        forecast may queue; `free_cached`: the snapshot's free cached blocks."""
        # A busy snapshot names thousands of blocks, mostly once. Hashes are chained, so two prompts
        # share a block only if they share their first: only prompts that do are compared, and each
        # block is only looked up among the free cached ones.
        free_hashes = {h for _, h in free_cached}
        named_free: set[int] = set()  # free cached blocks that some prompt names
        families: dict[int, list[tuple[int, ...]]] = {}
        for hs in all_hashes:
            if hs:
                families.setdefault(hs[0], []).append(hs)
                if free_hashes:
                    named_free.update(h for h in hs if h in free_hashes)
        shared = set(named_free)
        for family in families.values():
            if len(family) > 1:
                counts = Counter(chain.from_iterable(set(hs) for hs in family))
                shared.update(h for h, n in counts.items() if n > 1)
        self.wanted = wanted = frozenset(shared)
        self.held_hashes = held_hashes
        index: dict[int, int] = {}
        self.base_hashes: list[int] = []
        self.base_refs: list[int] = []
        self.base_idx: list[tuple[int, ...]] = []
        self.base_k: list[int] = []
        self.first_private: dict[int, int] = {}  # a request's first private block's hash -> request
        known: dict[tuple[int, ...], tuple[int, ...]] = {}  # wanted blocks -> their indexes
        for i, held in enumerate(held_hashes):
            k = 0
            while k < len(held) and held[k] in wanted:
                k += 1
            key = held[:k]
            idx = known.get(key)
            if idx is None:
                new = []
                for h in key:
                    j = index.get(h)
                    if j is None:
                        j = index[h] = len(self.base_hashes)
                        self.base_hashes.append(h)
                    new.append(j)
                idx = known[key] = tuple(new)
            self.base_idx.append(idx)
            self.base_k.append(k)
            if k < len(held):
                self.first_private[held[k]] = i
        refs = Counter(chain.from_iterable(self.base_idx))
        self.base_refs = [refs[j] for j in range(len(self.base_hashes))]
        # each request's records, picked from the list of distinct ones in one call
        self.base_get = [_picker(idx) for idx in self.base_idx]
        # blocks several requests hold are one block each
        self.shared_blocks = sum(self.base_k) - len(self.base_hashes)
        # free cached blocks at their queue positions: records when a request wants them (the others
        # only when a candidate does)
        self.free_all: list[tuple[int, int]] = []
        pos = 0
        for gap, h in free_cached:
            pos += gap
            self.free_all.append((pos, h))
            pos += 1
        self.free_end = pos
        self.named_free = named_free
        self.free_base = [x for x in self.free_all if x[1] in named_free] if named_free else []

    def start(
        self, free: int, candidate: tuple[int, ...]
    ) -> tuple[PrefixCache, list[tuple[CachedBlock, ...]], list[int]]:
        """A fresh cache for one forecast whose candidate has these hashes (`free`: the free
        blocks): the cache, and each loaded request's records and private block count."""
        cache = PrefixCache(0, collect=False)
        table = cache.table
        recs = []
        for h, ref in zip(self.base_hashes, self.base_refs, strict=True):
            b = CachedBlock(h, ref)
            table[h] = [b]
            recs.append(b)
        helds = [get(recs) for get in self.base_get]
        ks = self.base_k
        frees = self.free_base
        if candidate:
            # the candidate shares a request's private blocks from its first one on (hashes are
            # chained: sharing block j means sharing every block before it, at the same places)
            first, extend = self.first_private, {}
            for j, h in enumerate(candidate):
                i = first.get(h)
                if i is not None and self.base_k[i] == j:
                    held, depth = self.held_hashes[i], j
                    while depth < len(held) and depth < len(candidate) and held[depth] == candidate[depth]:
                        depth += 1
                    extend[i] = depth
            if extend:
                ks = list(ks)
                for i, depth in extend.items():
                    more = tuple(cache.register(h) for h in self.held_hashes[i][ks[i] : depth])
                    helds[i] += more
                    ks[i] = depth
            wants, named = set(candidate), self.named_free
            extra = [x for x in self.free_all if x[1] in wants and x[1] not in named]
            if extra:
                frees = sorted(frees + extra)
        for pos, h in frees:
            b = cache.register(h)
            b.ref, b.pos = 0, pos
        cache.end = max(self.free_end, free)
        implicit = [len(held) - k for held, k in zip(self.held_hashes, ks, strict=True)]
        return cache, helds, implicit


def _picker(idx: tuple[int, ...]) -> Callable[[list[CachedBlock]], tuple[CachedBlock, ...]]:
    if not idx:
        return lambda recs: ()
    if len(idx) == 1:
        i = idx[0]
        return lambda recs: (recs[i],)
    return itemgetter(*idx)  # type: ignore[return-value]
