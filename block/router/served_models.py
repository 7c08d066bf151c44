"""The model names the fleet serves, learned from each instance's GET /v1/models, so the router can
answer an unknown `model` with vLLM's 404 itself.

Learned each time an instance joins rotation, and lazily again (at most once per `RETRY_S` per
instance) while an instance in rotation has no list. Until every instance in rotation has one, the router
knows no list and passes every model on: the instance answers, as it would without a router.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import aiohttp
import orjson

if TYPE_CHECKING:
    from block.router.instance import Instance

log = logging.getLogger("block.router.served_models")

RETRY_S = 10.0  # how often an instance without a list is asked again
MAX_MODELS = 256  # more names than this in one listing: not a list we rely on


async def fetch_models(session: aiohttp.ClientSession, url: str, timeout: float) -> frozenset[str] | None:
    """The ids in `url`/v1/models, or None when it cannot be read as a model list."""
    try:
        async with session.get(url + "/v1/models", timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            if resp.status != 200:
                return None
            data = orjson.loads(await resp.read())
    except (aiohttp.ClientError, TimeoutError, OSError, orjson.JSONDecodeError):
        return None
    cards = data.get("data") if isinstance(data, dict) else None
    if not isinstance(cards, list) or not cards or len(cards) > MAX_MODELS:
        return None
    names = [c.get("id") for c in cards if isinstance(c, dict)]
    if not names or not all(isinstance(n, str) and n for n in names):
        return None
    return frozenset(names)


async def learn(session: aiohttp.ClientSession, inst: Instance, timeout: float) -> bool:
    """Ask `inst` for its models now; True when what we know changed. A failed answer forgets the
    list (an instance that came back may serve another model): its requests pass until it answers."""
    inst.models_asked_at = time.monotonic()
    models = await fetch_models(session, inst.url, timeout)
    if models is None:
        log.debug("instance %s: no model list from /v1/models; any model is passed on", inst.id)
    changed = models != inst.models
    inst.models = models
    return changed


def served_by(instances: list[Instance]) -> frozenset[str] | None:
    """Every model some instance serves; None unless each of `instances` has told us its list."""
    if not instances or any(i.models is None for i in instances):
        return None
    return frozenset().union(*(i.models for i in instances if i.models is not None))
