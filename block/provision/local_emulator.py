"""Provider `local-emulator`: the router starts `block engine` processes itself, on free local ports.

For demos, tests and live experiments without GPUs. Each engine runs in its own process group
(`block.launch.ManagedServer`); release stops it (SIGTERM, then SIGKILL, the whole group), and close()
stops every engine still running at router shutdown. Their logs go to one temporary folder.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import tempfile
from pathlib import Path

from block.launch import ManagedServer, block_command
from block.provision.provider import ProvisionError

log = logging.getLogger("block.provision.emulator")


class LocalEmulators:
    name = "local-emulator"

    def __init__(
        self,
        profile: str = "tiny-fast",
        host: str = "127.0.0.1",
        extra_args: list[str] | None = None,
        max_engines: int = 64,
    ) -> None:
        self.profile = profile
        self.host = host
        self.extra_args = list(extra_args or [])
        self.max_engines = max_engines
        self.servers: dict[str, ManagedServer] = {}
        self._ids = itertools.count()
        self._log_dir: Path | None = None

    async def acquire(self) -> str:
        if len(self.servers) >= self.max_engines:
            raise ProvisionError(f"already {len(self.servers)} local engines running")
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix="block-provision-"))
        args = ["engine", "--profile", self.profile, "--log-level", "warning", *self.extra_args]
        server = block_command(f"engine{next(self._ids)}", args, self._log_dir, host=self.host)
        # Not waiting for health: the router health-checks a new instance before routing to it. The port
        # is free now; if another process takes it before the engine binds, the engine exits, never
        # becomes healthy, and the next scale-up picks a fresh port.
        try:
            server.spawn()
        except OSError as e:
            raise ProvisionError(f"could not start block engine: {e}") from e
        self.servers[server.url] = server
        log.info("started block engine pid %d at %s (profile %s)", server.pgid, server.url, self.profile)
        return server.url

    async def release(self, url: str) -> None:
        url = url.rstrip("/")
        server = self.servers.get(url)
        if server is None:
            return  # not ours (an --instance given at start): leave it running
        await asyncio.to_thread(server.stop, 5.0)
        self.servers.pop(url, None)  # only now: if stopping is cut short, close() still stops it
        assert server.proc is not None
        log.info("stopped block engine pid %d at %s (exit %s)", server.pgid, url, server.proc.returncode)

    def standby(self) -> list[str]:
        return []  # engines are started on demand

    def alive(self, url: str) -> bool:
        server = self.servers.get(url.rstrip("/"))
        return server is not None and server.alive()

    async def close(self) -> None:
        servers, self.servers = list(self.servers.values()), {}
        await asyncio.gather(*(asyncio.to_thread(s.stop, 5.0) for s in servers))
