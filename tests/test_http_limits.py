"""block.http_limits on uvicorn's httptools protocol, in process: what must still work at the edges of
the limits (a big body in the read that ends the head, pipelined requests, a head just under the
limit), and what must not."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import uvicorn

from block.http_limits import HttpLimits

LIMITS = HttpLimits(max_header_bytes=16 * 1024, header_timeout_s=5.0, body_timeout_s=5.0)


async def echo(scope, receive, send) -> None:  # noqa: ANN001
    """Answers with the request body."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def served() -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    options = {**LIMITS.uvicorn_options(), "loop": "none"}  # the test's loop is already running
    server = uvicorn.Server(uvicorn.Config(echo, log_level="warning", lifespan="off", **options))
    task = asyncio.create_task(server._serve(sockets=[sock]))
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def exchange(port: int, data: bytes) -> bytes:
    """Send `data` at once, read until the server closes (every request here says Connection: close
    last)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return reply


def post(body: bytes, close: bool = True, extra: bytes = b"") -> bytes:
    head = b"POST / HTTP/1.1\r\nHost: x\r\n" + extra + b"Content-Length: %d\r\n" % len(body)
    return head + (b"Connection: close\r\n" if close else b"") + b"\r\n" + body


async def test_a_big_body_in_the_read_that_ends_the_head_is_not_a_big_head() -> None:
    async with served() as port:
        body = b"z" * 300_000
        reply = await exchange(port, post(body))
        assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(body)


async def test_pipelined_requests_in_one_write_are_each_answered() -> None:
    async with served() as port:
        three = post(b"one", close=False) + post(b"x" * 20_000, close=False) + post(b"3")
        reply = await exchange(port, three)
        assert reply.count(b"HTTP/1.1 200") == 3 and reply.endswith(b"3")


async def test_a_head_just_under_the_limit_passes_and_one_over_gets_431() -> None:
    async with served() as port:
        near = b"X-Pad: " + b"a" * (LIMITS.max_header_bytes - 200) + b"\r\n"
        assert (await exchange(port, post(b"ok", extra=near))).startswith(b"HTTP/1.1 200")
        over = b"X-Pad: " + b"a" * LIMITS.max_header_bytes + b"\r\n"
        reply = await exchange(port, post(b"ok", extra=over))
        assert reply.startswith(b"HTTP/1.1 431") and b'"code":431' in reply
