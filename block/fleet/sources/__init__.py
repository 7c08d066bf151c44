"""The state sources, in the order they are tried on a new instance: the first that recognises it reads
it. Adding a source is one file in this package (a `StateSource` subclass) and its place in SOURCES."""

from __future__ import annotations

import aiohttp

from block.fleet.sources.base import Reading, StateSource
from block.fleet.sources.block_state import BlockState
from block.fleet.sources.vllm_metrics import VllmMetrics

SOURCES: list[type[StateSource]] = [BlockState, VllmMetrics]


async def detect(session: aiohttp.ClientSession, url: str, timeout: float) -> type[StateSource] | None:
    """The kind of the instance at `url`; None when it cannot be told now (unreachable, an error)."""
    for source in SOURCES:
        verdict = await source.detect(session, url, timeout)
        if verdict is None:
            return None
        if verdict:
            return source
    return None


__all__ = ["SOURCES", "BlockState", "Reading", "StateSource", "VllmMetrics", "detect"]
