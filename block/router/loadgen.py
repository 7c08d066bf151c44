"""A lean HTTP/1.1 load generator for the router benchmark: asyncio protocols and the httptools parser,
keep-alive connections, pre-encoded requests. It costs a fraction of a general client per request, so on
a small machine more of the CPU is left for the router under test."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

_EVENT = b"data: {"


@dataclass(slots=True)
class Result:
    status: int = 0
    started: float = 0.0
    first_byte: float = 0.0  # first body byte
    done: float = 0.0
    events: int = 0  # SSE data events with a JSON object
    finished_with_done: bool = False
    error: str | None = None

    @property
    def latency(self) -> float:
        return self.done - self.started

    @property
    def ttfb(self) -> float:
        return self.first_byte - self.started


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.result: Result | None = None
        self.waiter: asyncio.Future[Result] | None = None
        self.tail = b""
        self.closed = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(f"bad response: {e}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail("connection closed")

    # httptools callbacks
    def on_headers_complete(self) -> None:
        if self.result is not None:
            self.result.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        r = self.result
        if r is None:
            return
        if not r.first_byte:
            r.first_byte = time.perf_counter()
        joined = self.tail + body
        r.events += joined.count(_EVENT) - self.tail.count(_EVENT)
        self.tail = joined[-16:]

    def on_message_complete(self) -> None:
        r, w = self.result, self.waiter
        if r is None or w is None:
            return
        r.done = time.perf_counter()
        r.finished_with_done = self.tail.endswith(b"[DONE]\n\n")
        if not r.first_byte:
            r.first_byte = r.done
        self.result = self.waiter = None
        if not w.done():
            w.set_result(r)

    def _fail(self, why: str) -> None:
        r, w = self.result, self.waiter
        self.result = self.waiter = None
        if r is not None and w is not None and not w.done():
            r.error = why
            r.done = time.perf_counter()
            w.set_result(r)

    def send(self, raw: bytes) -> asyncio.Future[Result]:
        assert self.transport is not None
        self.result = Result(started=time.perf_counter())
        self.tail = b""
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return self.waiter


class LoadClient:
    """Keep-alive connections to one host; `request()` takes an idle one or opens another."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self._idle: list[_Conn] = []
        self._all: list[_Conn] = []

    @staticmethod
    def encode(path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = (
            f"POST {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n{extra}\r\n"
        )
        return head.encode() + body

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Conn, self.host, self.port)
        self._all.append(conn)
        return conn

    async def request(self, raw: bytes, timeout: float = 60.0) -> Result:
        started = time.perf_counter()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                break
        else:
            try:
                conn = await self._connect()
            except OSError as e:
                return Result(started=started, done=time.perf_counter(), error=f"connect: {e}")
        try:
            result = await asyncio.wait_for(conn.send(raw), timeout)
        except TimeoutError:
            conn.closed = True
            if conn.transport is not None:
                conn.transport.close()
            return Result(started=started, done=time.perf_counter(), error="timeout")
        result.started = started  # connection setup counts: the client waited for it
        if result.error is None and not conn.closed:
            self._idle.append(conn)
        return result

    def close(self) -> None:
        for conn in self._all:
            if conn.transport is not None:
                conn.transport.close()
        self._all.clear()
        self._idle.clear()
