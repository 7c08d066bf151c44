"""Serving an engine with uvicorn (uvloop + httptools), in the foreground or in a background thread."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn

from block.engine.app import EngineServer
from block.engine.settings import EngineSettings
from block.http_limits import HttpLimits


def uvicorn_config(server: EngineServer, host: str, port: int, log_level: str = "warning") -> uvicorn.Config:
    return uvicorn.Config(
        server.app,
        host=host,
        port=port,
        **HttpLimits().uvicorn_options(),  # header size, header and body read timeouts
        lifespan="on",
        access_log=False,
        log_level=log_level,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=2,
        backlog=4096,
    )


def serve(
    settings: EngineSettings, host: str = "127.0.0.1", port: int = 8001, log_level: str = "info"
) -> None:
    """Run until interrupted (uvicorn handles SIGINT/SIGTERM)."""
    uvicorn.Server(uvicorn_config(EngineServer(settings), host, port, log_level)).run()


def serve_many(
    settings: list[EngineSettings], host: str = "127.0.0.1", port: int = 8001, log_level: str = "info"
) -> None:
    """Several engines in one process and one event loop, on ports `port`, `port + 1`, ...: a big
    emulated fleet on a small machine (`block router bench --engines-per-process`). Until interrupted."""
    import asyncio

    import uvloop

    configs = [uvicorn_config(EngineServer(s), host, port + i, log_level) for i, s in enumerate(settings)]
    servers = [uvicorn.Server(c) for c in configs]

    async def run_all() -> None:
        await asyncio.gather(*(server.serve() for server in servers))

    uvloop.run(run_all())


class BackgroundEngine:
    """An engine serving on 127.0.0.1 in its own thread and event loop (for tests and tools)."""

    def __init__(self, settings: EngineSettings, host: str = "127.0.0.1") -> None:
        self.engine_server = EngineServer(settings)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))  # a free port, held from now on: no race with other servers
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn_config(self.engine_server, host, self.port))
        self._thread = threading.Thread(target=self._run, name=f"block-engine-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        import uvloop

        uvloop.run(self._server.serve(sockets=[self._sock]))

    def start(self, timeout_s: float = 30.0) -> BackgroundEngine:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop(1.0)
                raise RuntimeError("the engine server did not start")
            time.sleep(0.005)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout_s)
        with contextlib.suppress(OSError):
            self._sock.close()


@contextlib.contextmanager
def background_engine(settings: EngineSettings) -> Iterator[BackgroundEngine]:
    engine = BackgroundEngine(settings).start()
    try:
        yield engine
    finally:
        engine.stop()
