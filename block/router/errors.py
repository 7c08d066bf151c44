"""The router's OpenAI-format errors (rendered by block/openai_api/errors.py, as the engine's are) and
the tiny ASGI helpers that send them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from block.openai_api import errors as openai_errors

Send = Callable[[dict[str, Any]], Awaitable[None]]


def error_body(status: int, message: str, code: str | None = None) -> bytes:
    return openai_errors.error_body(status, message, code=code)


def error_sse(message: str, code: str = "upstream_error", status: int = 502) -> bytes:
    """The last event of a stream cut midway: an error object, then [DONE], so clients never hang."""
    return openai_errors.error_event(status, message, code)


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = b"application/json",
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if extra_headers:
        headers.extend(extra_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_json(
    send: Send, status: int, obj: Any, extra_headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send_bytes(send, status, orjson.dumps(obj), extra_headers=extra_headers)


async def send_error(
    send: Send,
    status: int,
    message: str,
    code: str | None = None,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await send_bytes(send, status, error_body(status, message, code), extra_headers=extra_headers)
