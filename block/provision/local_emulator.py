"""Provider `local-emulator`: the router starts `block engine` processes itself, on free local ports.

For demos, tests and live experiments without GPUs. Each engine runs in its own process group; release
stops it (SIGTERM, then SIGKILL), and close() stops every engine still running at router shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys

from block.provision.processes import stop_group
from block.provision.providers import LOCAL_EMULATOR, ProvisionError

log = logging.getLogger("block.provision.emulator")

# `block engine` without the other command groups (faster start) or the console script's PATH.
_ENTRY = ("-m", "block.engine")


def free_port(host: str = "127.0.0.1") -> int:
    # The port is free now; another process could take it before the engine binds (then the engine
    # exits, never becomes healthy, and the next scale-up picks a fresh port).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalEmulators:
    name = LOCAL_EMULATOR

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
        self.procs: dict[str, asyncio.subprocess.Process] = {}

    async def acquire(self) -> str:
        if len(self.procs) >= self.max_engines:
            raise ProvisionError(f"already {len(self.procs)} local engines running")
        port = free_port(self.host)
        args = ["--profile", self.profile, "--host", self.host, "--port", str(port)]
        args += ["--log-level", "warning", *self.extra_args]
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                *_ENTRY,
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as e:
            raise ProvisionError(f"could not start block engine: {e}") from e
        url = f"http://{self.host}:{port}"
        self.procs[url] = proc
        log.info("started block engine pid %d at %s (profile %s)", proc.pid, url, self.profile)
        return url

    async def release(self, url: str) -> None:
        url = url.rstrip("/")
        proc = self.procs.get(url)
        if proc is None:
            return  # not ours (an --instance given at start): leave it running
        status = await stop_group(proc)
        self.procs.pop(url, None)  # only now: if stopping is cut short, close() still stops it
        log.info("stopped block engine pid %d at %s (exit %s)", proc.pid, url, status)

    def standby(self) -> list[str]:
        return []  # engines are started on demand

    def alive(self, url: str) -> bool:
        proc = self.procs.get(url.rstrip("/"))
        return proc is not None and proc.returncode is None

    async def close(self) -> None:
        procs, self.procs = list(self.procs.values()), {}
        await asyncio.gather(*(stop_group(p) for p in procs))
