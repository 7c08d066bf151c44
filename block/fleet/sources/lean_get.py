"""A lean HTTP/1.1 GET of one path over one keep-alive connection, for state reads.

A router polls every instance's state many times a second; through a general client (aiohttp) each read
cost about 200 us of the router's event loop, most of it in building and tracking the request. Here the
request is encoded once, the answer parsed by httptools (as the load generator does), and the
connection kept open between reads: on a large fleet the reads cost a fraction of what they did.
Plain http:// only (the caller uses its general client for anything else).
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httptools

# A busy, cache-heavy engine state is about 50 KB; anything near this is a server gone wrong.
MAX_BODY_BYTES = 16 << 20


class _Answer(asyncio.Protocol):
    """One connection; at most one request on it at a time, its body at most `max_bytes` long."""

    def __init__(self, max_bytes: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.max_bytes = max_bytes
        self.size = 0
        self.body: list[bytes] = []
        self.received = False  # any byte of the answer in flight
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(ValueError(f"bad response: {e}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionResetError("connection closed"))

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.max_bytes:  # a server gone wrong must not fill the router's memory
            self._fail(ValueError(f"response longer than {self.max_bytes} bytes"))
            self.close()
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        w = self.waiter
        self.waiter = None
        if w is not None and not w.done():
            w.set_result((self.parser.get_status_code(), b"".join(self.body)))
        if not self.parser.should_keep_alive():
            self.close()

    def _fail(self, error: Exception) -> None:
        w = self.waiter
        self.waiter = None
        if w is not None and not w.done():
            w.set_exception(error)

    def send(self, raw: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self.body, self.size, self.received = [], 0, False
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return self.waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class LeanGet:
    """GET `path` at `base_url` (http://host:port), one request at a time over a kept connection."""

    def __init__(self, base_url: str, path: str, max_bytes: int = MAX_BODY_BYTES) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"not a plain http URL: {base_url}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.max_bytes = max_bytes
        host = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"  # IPv6
        self._raw = f"GET {parts.path.rstrip('/')}{path} HTTP/1.1\r\nhost: {host}\r\n\r\n".encode()
        self._conn: _Answer | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def where_plain(cls, base_url: str, path: str) -> LeanGet | None:
        """One for `base_url` when it is plain http://; None otherwise (the caller's general client then)."""
        return cls(base_url, path) if base_url.startswith("http://") else None

    async def get(self, timeout: float) -> tuple[int, bytes]:
        """(status, body). Raises TimeoutError, OSError (connection refused, reset or closed) or
        ValueError (not HTTP)."""
        async with self._lock, asyncio.timeout(timeout):
            conn = self._conn
            if conn is not None and not conn.closed:
                try:
                    return await self._ask(conn)
                except ConnectionResetError:
                    if conn.received:  # it failed while answering: say so
                        raise
                # else the server closed the idle connection as this read went out: once more, anew
            return await self._ask(await self._connect())

    async def _connect(self) -> _Answer:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: _Answer(self.max_bytes), self.host, self.port)
        self._conn = conn
        return conn

    async def _ask(self, conn: _Answer) -> tuple[int, bytes]:
        try:
            return await conn.send(self._raw)
        except BaseException:  # a timeout or error mid-answer leaves the connection unusable
            conn.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
