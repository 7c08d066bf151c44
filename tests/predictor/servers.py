"""Real servers for tests: a Block engine and a predictor sidecar on 127.0.0.1, each in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from block.profiles.profile import load_profile
from block.sidecar.service import PredictorService


@contextlib.contextmanager
def app_in_thread(app) -> Iterator[str]:  # noqa: ANN001
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextlib.contextmanager
def engine(profile: str = "llama-2-7b-a30") -> Iterator[str]:
    from block.engine.server import background_engine
    from block.engine.settings import EngineSettings, replica_config

    prof = load_profile(profile)
    with background_engine(EngineSettings(prof, replica_config(prof), noise=0.0, seed=0)) as e:
        yield e.url


@contextlib.contextmanager
def sidecar(engine_url: str, refresh_s: float = 0.02, **tracker_options: Any) -> Iterator[str]:
    with sidecar_service(engine_url, refresh_s, **tracker_options) as (_service, url):
        yield url


@contextlib.contextmanager
def sidecar_service(
    engine_url: str, refresh_s: float = 0.02, token: str | None = None, **tracker_options: Any
) -> Iterator[tuple[PredictorService, str]]:
    """A sidecar with its first snapshot, and the service object (to look at its tracker)."""
    service = PredictorService(engine_url, None, refresh_s, tracker_options=tracker_options, token=token)
    with app_in_thread(service.app) as url:
        import httpx

        deadline = time.monotonic() + 10
        while httpx.get(url + "/health").status_code != 200:
            assert time.monotonic() < deadline, "the sidecar never got a snapshot"
            time.sleep(0.02)
        yield service, url
