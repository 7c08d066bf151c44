"""A replica's state as plain data: what an engine's `/state` returns and a forecast starts from.

Prefix caching adds each request's prompt block hashes and the free cached blocks. As JSON numbers
they would make a busy engine's state several times larger and slower to parse (it is polled every
20 ms), so `to_dict` packs them: a base64 string of little-endian signed 64-bit integers (a hash,
or for `free_cached` a gap then a hash per block). `from_dict` also reads plain JSON lists.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from block.replica.config import ReplicaConfig


@dataclass(slots=True)
class RequestState:
    id: str
    arrival_time: float
    prompt_tokens: int
    computed_tokens: int = 0
    output_tokens: int = 0  # generated so far
    expected_output_tokens: int | None = None  # total output the router planned with, if known
    # chained hashes of the prompt's full blocks (prefix caching); its first computed_tokens //
    # block_size are cached blocks it holds. Sent only when non-empty.
    prefix_hashes: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = {
            "id": self.id,
            "arrival_time": self.arrival_time,
            "prompt_tokens": self.prompt_tokens,
            "computed_tokens": self.computed_tokens,
            "output_tokens": self.output_tokens,
            "expected_output_tokens": self.expected_output_tokens,
        }
        if self.prefix_hashes:
            d["prefix_hashes"] = pack_ints(self.prefix_hashes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RequestState:
        expected = d.get("expected_output_tokens")
        return cls(
            id=str(d["id"]),
            arrival_time=float(d.get("arrival_time", 0.0)),
            prompt_tokens=int(d["prompt_tokens"]),
            computed_tokens=int(d.get("computed_tokens", 0)),
            output_tokens=int(d.get("output_tokens", 0)),
            expected_output_tokens=None if expected is None else int(expected),
            prefix_hashes=unpack_ints(d.get("prefix_hashes", ())),
        )


@dataclass(slots=True)
class Snapshot:
    config: ReplicaConfig
    now: float
    running: list[RequestState] = field(default_factory=list)  # in scheduling order, oldest first
    waiting: list[RequestState] = field(default_factory=list)  # FCFS order, next to admit first
    free_blocks: int | None = None
    num_preemptions: int = 0
    profile: str = ""
    # prefix caching on: the cached blocks no request holds, in eviction order, as (anonymous free
    # blocks in front of it, hash); the blocks requests hold are their prefix_hashes. None: caching off
    free_cached: list[tuple[int, int]] | None = None
    _cached: frozenset[int] | None = field(default=None, init=False, repr=False, compare=False)
    _free_hashes: frozenset[int] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def num_requests(self) -> int:
        return len(self.running) + len(self.waiting)

    def free_hashes(self) -> frozenset[int]:
        """The hashes of the cached blocks no request holds (empty with caching off), built once: the
        floors, the forecasts and the policy's affinity all look blocks up in it."""
        free = self._free_hashes
        if free is None:
            free = self._free_hashes = frozenset(h for _, h in self.free_cached or ())
        return free

    def cached_prefix_blocks(self, hashes: tuple[int, ...]) -> int:
        """How many leading blocks of a prompt with these block hashes the instance holds in its prefix
        cache (held by a request or free), or will once its queued requests have prefilled them (as a
        router records a prefix when it routes it); 0 with caching off."""
        if not hashes or not self.config.enable_prefix_caching:
            return 0
        cached = self._cached
        if cached is None:
            queued = (s.prefix_hashes for s in (*self.running, *self.waiting))
            cached = self._cached = self.free_hashes().union(*queued)  # (each tuple added in C)
        n = 0
        for h in hashes:
            if h not in cached:
                break
            n += 1
        return n

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "profile": self.profile,
            "now": self.now,
            "running": [r.to_dict() for r in self.running],
            "waiting": [r.to_dict() for r in self.waiting],
            "free_blocks": self.free_blocks,
            "num_preemptions": self.num_preemptions,
            **({} if self.free_cached is None else {"free_cached": pack_ints(_flat(self.free_cached))}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Snapshot:
        try:
            free = d.get("free_blocks")
            free_cached = d.get("free_cached")
            return cls(
                config=ReplicaConfig.from_dict(d["config"]),
                now=float(d["now"]),
                running=[RequestState.from_dict(r) for r in d.get("running", [])],
                waiting=[RequestState.from_dict(r) for r in d.get("waiting", [])],
                free_blocks=None if free is None else int(free),
                num_preemptions=int(d.get("num_preemptions", 0)),
                profile=str(d.get("profile", "")),
                free_cached=None if free_cached is None else _pairs(free_cached),
            )
        except (KeyError, TypeError, ValueError, binascii.Error) as e:
            raise ValueError(f"malformed snapshot: {e}") from e


def pack_ints(values: Sequence[int]) -> str | list[int]:
    """Integers as base64 of little-endian int64s (a plain list if one does not fit)."""
    try:
        return base64.b64encode(struct.pack(f"<{len(values)}q", *values)).decode("ascii")
    except struct.error:
        return [int(v) for v in values]


def unpack_ints(data: str | Sequence[Any]) -> tuple[int, ...]:
    if isinstance(data, str):
        raw = base64.b64decode(data, validate=True)
        if len(raw) % 8:
            raise ValueError("packed integers must be a multiple of 8 bytes")
        return struct.unpack(f"<{len(raw) // 8}q", raw)
    return tuple(int(v) for v in data)


def _flat(pairs: Sequence[tuple[int, int]]) -> list[int]:
    return [x for pair in pairs for x in pair]


def _pairs(data: str | Sequence[Any]) -> list[tuple[int, int]]:
    if isinstance(data, str):
        flat = unpack_ints(data)
        if len(flat) % 2:
            raise ValueError("free_cached must hold (gap, hash) pairs")
        return list(zip(flat[::2], flat[1::2], strict=True))
    return [(int(g), int(h)) for g, h in data]
