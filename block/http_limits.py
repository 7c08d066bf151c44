"""Limits on what a client may send before a Block server answers, shared by the router, the engine
and the predictor sidecar (all uvicorn with uvloop + httptools).

uvicorn bounds neither the size of a request's head nor how long it may take to arrive with httptools:
a 64 MB header is buffered whole, and a connection that sends a byte every few seconds (slowloris), or
nothing at all, is kept forever. `HttpLimits.uvicorn_options()` gives uvicorn a subclass of its
`HttpToolsProtocol` that

- answers 431 and closes once a request's head (request line and headers) passes `max_header_bytes`.
  Bytes are counted before they reach the parser, so no more than that is ever buffered (a read that
  ends one request and starts the next counts from the next request's first whole read);
- closes a connection whose first request head is not complete `header_timeout_s` after it opened, and
  one whose later head is not complete `header_timeout_s` after that head's first byte (408 when part
  of a head came; the idle wait between requests is uvicorn's `timeout_keep_alive`);
- answers 408 and closes when a request's body is not complete `body_timeout_s` after its head (while
  the application is not reading, which pauses the socket, the clock is not the client's fault and
  restarts).

A timer is armed only when a head or a body spans reads, so a request that arrives in one read costs a
few attribute checks.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from block.openai_api.errors import error_body

DEFAULT_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_BODY_TIMEOUT_S = 30.0
LINGER_S = 2.0  # after an error answer, how long what the client still sends is read and dropped


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.max_header_bytes < 1024:
            raise ValueError("max_header_bytes must be >= 1024")
        if self.header_timeout_s <= 0 or self.body_timeout_s <= 0:
            raise ValueError("header_timeout_s and body_timeout_s must be > 0")

    def protocol(self) -> type[HttpToolsProtocol]:
        """uvicorn's httptools protocol with these limits (a class: uvicorn instantiates it)."""
        return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": self})

    def uvicorn_options(self) -> dict[str, Any]:
        """The `uvicorn.Config` keywords for the event loop and the HTTP protocol."""
        return {"loop": "uvloop", "http": self.protocol()}


def _close_response(status: int, message: str) -> bytes:
    """A complete response that closes the connection, with an OpenAI-format error body."""
    body = error_body(status, message)
    head = b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
    return STATUS_LINE[status] + head + body


# uvicorn's own handlers, called directly rather than through super(): these run for every request.
_feed = HttpToolsProtocol.data_received
_headers_complete = HttpToolsProtocol.on_headers_complete
_message_complete = HttpToolsProtocol.on_message_complete


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[HttpLimits] = HttpLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_head = True  # between two requests counts as reading the next one's head
        self._head_bytes = 0
        self._reading_body = False
        self._limit_timer: asyncio.TimerHandle | None = None
        self._lingering = False  # answered with an error: input is dropped until the close

    # -- connection ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.header_timeout_s, self._head_timed_out)  # an open, silent connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        if self._reading_head:
            room = self.limits.max_header_bytes - self._head_bytes
            if len(data) > room:
                self._feed_past_head_limit(data, room)
                return
            self._head_bytes += len(data)
        _feed(self, data)
        if self._limit_timer is None:  # a head or a body spanning reads: bound how long it may take
            if self._reading_head and self._head_bytes:
                self._arm(self.limits.header_timeout_s, self._head_timed_out)
            elif self._reading_body:
                self._arm(self.limits.body_timeout_s, self._body_timed_out)

    def _feed_past_head_limit(self, data: bytes, room: int) -> None:
        """Feed what fits: if the head ends there, the rest is its body or the next request."""
        _feed(self, data[:room])
        if self.transport.is_closing():
            return
        if self._reading_head:
            self._head_bytes += room
            message = f"request header fields larger than {self.limits.max_header_bytes} bytes"
            self._close(431, message, answer=self._between_responses())
        else:
            self.data_received(data[room:])

    # -- parser callbacks ------------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._reading_body = True
        if self._limit_timer is not None:
            self._disarm()
        _headers_complete(self)

    def on_message_complete(self) -> None:
        self._reading_body = False
        self._reading_head = True
        self._head_bytes = 0
        if self._limit_timer is not None:
            self._disarm()
        _message_complete(self)

    # -- timers ----------------------------------------------------------------------------------

    def _arm(self, seconds: float, then: Any) -> None:
        self._limit_timer = self.loop.call_later(seconds, then)

    def _disarm(self) -> None:
        if self._limit_timer is not None:
            self._limit_timer.cancel()
            self._limit_timer = None

    def _head_timed_out(self) -> None:
        self._limit_timer = None
        if not self._reading_head or self.transport.is_closing():
            return
        message = f"request header not received within {self.limits.header_timeout_s:g} s"
        # a client that never said anything gets no answer
        self._close(408, message, answer=self._head_bytes > 0 and self._between_responses())

    def _body_timed_out(self) -> None:
        self._limit_timer = None
        if not self._reading_body or self.transport.is_closing():
            return
        if self.flow.read_paused:  # the application is not reading: not the client's delay
            self._arm(self.limits.body_timeout_s, self._body_timed_out)
            return
        message = f"request body not received within {self.limits.body_timeout_s:g} s"
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            cycle.disconnected = True  # the application sees a disconnect; its reply goes nowhere
            cycle.message_event.set()
            self._close(408, message, answer=True)
        else:  # already answered (say 413 before reading it all): a second answer would confuse
            self._close(408, message, answer=False)

    def _between_responses(self) -> bool:
        """No response under way on this connection: an answer to the new request is in order."""
        return self.cycle is None or self.cycle.response_complete

    def _close(self, status: int, message: str, *, answer: bool) -> None:
        self.logger.debug("%s: %d %s (%s)", self.client, status, message, "answered" if answer else "closed")
        if not answer:
            self.transport.close()
            return
        self.transport.write(_close_response(status, message))
        self._linger()

    def _linger(self) -> None:
        """Half-close after the answer and drop what the client still sends, for a moment: closing
        with unread input would reset the connection and lose the answer."""
        self._lingering = True
        self._reading_head = self._reading_body = False
        self._disarm()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.flow.resume_reading()
        self._arm(LINGER_S, self.transport.close)
