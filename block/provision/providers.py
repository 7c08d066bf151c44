"""The provider interface: whatever can hand the router a new instance URL and take one back.

Providers only act; the controller decides. `acquire` returns as soon as the instance has an address; the
router health-checks it and puts it in rotation once it answers (so slow boots never block the router).
"""

from __future__ import annotations

from typing import Protocol

STATIC = "static"
LOCAL_EMULATOR = "local-emulator"
COMMAND = "command"
PROVIDERS = (STATIC, LOCAL_EMULATOR, COMMAND)


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


def make_provider(
    kind: str,
    *,
    standby: list[str] | None = None,
    scale_up_cmd: str | None = None,
    scale_down_cmd: str | None = None,
    hook_timeout_s: float = 300.0,
    emulator_profile: str = "tiny-fast",
) -> Provider:
    if kind == STATIC:
        from block.provision.static_pool import StaticPool

        return StaticPool(standby or [])
    if kind == LOCAL_EMULATOR:
        from block.provision.local_emulator import LocalEmulators

        return LocalEmulators(emulator_profile)
    if kind == COMMAND:
        from block.provision.command_hooks import CommandHooks

        return CommandHooks(scale_up_cmd or "", scale_down_cmd, hook_timeout_s)
    raise ValueError(f"unknown provider {kind!r} (known: {', '.join(PROVIDERS)})")
