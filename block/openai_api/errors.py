"""The one OpenAI-format error renderer, used by the router, the engine and the predictor sidecar.

    {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}

The shape and the type names are vLLM's (>= 0.10), so a client behind the router sees one vocabulary
whether the router or an engine refused its request: `type` follows the HTTP status (the OpenAI
client's exception class names), `code` is the status, or a more specific string when the caller
has one ("upstream_error", "no_healthy_instance", "invalid_api_key").
"""

from __future__ import annotations

import orjson

_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    405: "MethodNotAllowedError",
    409: "ConflictError",
    413: "RequestTooLargeError",
    422: "UnprocessableEntityError",
    429: "RateLimitError",
    503: "ServiceUnavailableError",
}


def error_type(status: int) -> str:
    if status in _TYPES:
        return _TYPES[status]
    return "InternalServerError" if status >= 500 else "BadRequestError"


def error_object(
    status: int, message: str, param: str | None = None, code: str | int | None = None
) -> dict[str, object]:
    return {
        "error": {
            "message": message,
            "type": error_type(status),
            "param": param,
            "code": status if code is None else code,
        }
    }


def error_body(status: int, message: str, param: str | None = None, code: str | int | None = None) -> bytes:
    return orjson.dumps(error_object(status, message, param, code))


def error_event(status: int, message: str, code: str | int | None = None) -> bytes:
    """The last events of a stream that failed midway: the error, then [DONE], so clients never hang."""
    return b"data: " + error_body(status, message, None, code) + b"\n\ndata: [DONE]\n\n"


class RequestError(Exception):
    """A request the server refuses (400 unless told otherwise), rendered by `body()`."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status

    def body(self) -> bytes:
        return error_body(self.status, self.message, self.param)
