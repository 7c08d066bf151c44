"""The provider interface: whatever can hand the router a new instance URL and take one back.

Providers only act; the controller decides. `acquire` returns as soon as the instance has an address; the
router health-checks it and puts it in rotation once it answers (so slow boots never block the router).
"""

from __future__ import annotations

from typing import Protocol


class ProvisionError(Exception):
    """A provider could not add or release an instance (nothing left, a hook failed...)."""


class Provider(Protocol):
    name: str

    async def acquire(self) -> str:
        """Start or reserve one instance; its base URL. Raises ProvisionError."""
        ...

    async def release(self, url: str) -> None:
        """Give back an instance the router no longer routes to (its requests have finished)."""
        ...

    def standby(self) -> list[str]:
        """Instances ready to be handed out without starting anything (for GET /instances)."""
        ...

    async def close(self) -> None:
        """Router shutdown: stop whatever this provider started."""
        ...
