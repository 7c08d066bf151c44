"""LeanGet: the state reads' kept connection, against a real socket server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from block.fleet.sources.lean_get import LeanGet
from tests.router.servers import bound_socket


class TinyServer:
    """Answers every GET with `body`; `close_after`: close each connection after its first answer;
    `hang`: never answer. Counts the connections it accepted."""

    def __init__(self, body: bytes = b'{"ok": 1}', close_after: bool = False, hang: bool = False) -> None:
        self.body, self.close_after, self.hang = body, close_after, hang
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            for _ in range(1000):  # bounded: one connection's requests
                head = await reader.readuntil(b"\r\n\r\n")
                if self.hang:
                    await reader.read()  # until the client hangs up
                    return
                status = b"200 OK" if head.startswith(b"GET /state ") else b"404 Not Found"
                extra = b"connection: close\r\n" if self.close_after else b""
                writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: %d\r\n" % len(self.body) + extra)
                writer.write(b"\r\n" + self.body)
                await writer.drain()
                if self.close_after:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def serving(server: TinyServer) -> AsyncIterator[str]:
    sock = bound_socket()
    srv = await asyncio.start_server(server.handle, sock=sock)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        srv.close()
        await srv.wait_closed()


async def test_reads_share_one_kept_connection() -> None:
    server = TinyServer()
    async with serving(server) as url:
        get = LeanGet(url, "/state")
        try:
            for _ in range(5):
                assert await get.get(2.0) == (200, b'{"ok": 1}')
            assert server.connections == 1
            assert (await LeanGet(url, "/nothing").get(2.0))[0] == 404
        finally:
            get.close()


async def test_a_server_that_closes_after_each_answer_is_read_anew_each_time() -> None:
    server = TinyServer(close_after=True)
    async with serving(server) as url:
        get = LeanGet(url, "/state")
        try:
            for _ in range(3):
                assert await get.get(2.0) == (200, b'{"ok": 1}')
            assert server.connections == 3
        finally:
            get.close()


async def test_errors_are_the_ones_a_state_read_expects() -> None:
    idle = bound_socket()  # bound, not listening: connections are refused
    with pytest.raises(OSError):
        await LeanGet(f"http://127.0.0.1:{idle.getsockname()[1]}", "/state").get(2.0)
    idle.close()
    async with serving(TinyServer(hang=True)) as url:
        get = LeanGet(url, "/state")
        with pytest.raises(TimeoutError):
            await get.get(0.2)
        get.close()
    with pytest.raises(ValueError):
        LeanGet("https://127.0.0.1:1", "/state")


async def test_an_answer_longer_than_the_bound_is_an_error_not_a_memory_hog() -> None:
    async with serving(TinyServer(body=b"x" * 5000)) as url:
        short, enough = LeanGet(url, "/state", max_bytes=4096), LeanGet(url, "/state", max_bytes=5000)
        try:
            with pytest.raises(ValueError, match="longer than 4096"):
                await short.get(2.0)
            assert await enough.get(2.0) == (200, b"x" * 5000)
        finally:
            short.close()
            enough.close()


def test_an_ipv6_host_is_bracketed_in_the_host_header() -> None:
    assert b"host: [::1]:8001\r\n" in LeanGet("http://[::1]:8001", "/state")._raw
