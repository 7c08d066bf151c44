"""Provider `static`: a fixed list of standby instances that are already running somewhere.

Scale-up takes the first standby URL; scale-down puts the URL back at the front (the most recently
used instance is the warmest one to hand out again). Nothing is started or stopped.
"""

from __future__ import annotations

from block.provision.provider import ProvisionError


class StaticPool:
    name = "static"

    def __init__(self, standby: list[str]) -> None:
        self._standby = [u.rstrip("/") for u in standby]

    async def acquire(self) -> str:
        if not self._standby:
            raise ProvisionError("no standby instance left (give more with --standby URL)")
        return self._standby.pop(0)

    async def release(self, url: str) -> None:
        url = url.rstrip("/")
        if url not in self._standby:
            self._standby.insert(0, url)

    def standby(self) -> list[str]:
        return list(self._standby)

    async def close(self) -> None:
        return None
