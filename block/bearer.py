"""Bearer credentials (`Authorization: Bearer <secret>`), read and compared one way by every server of
the project: the router's API key and admin token, the predictor sidecar's token.

The scheme is matched case-insensitively (RFC 7235) and secrets are compared in constant time."""

from __future__ import annotations

import hmac


def bearer_token(authorization: str | bytes | None) -> bytes | None:
    """The credential of an `Authorization: Bearer <token>` header (any case of `Bearer`), else None."""
    if authorization is None:
        return None
    raw = authorization.encode("latin-1", "replace") if isinstance(authorization, str) else authorization
    scheme, _, token = raw.strip().partition(b" ")
    token = token.strip()
    if scheme.lower() != b"bearer" or not token:
        return None
    return token


def matches(given: bytes | None, secrets: list[bytes]) -> bool:
    """True when `given` equals one of `secrets`. Every secret is compared (in constant time) so the
    time taken does not say which one nearly matched."""
    if given is None:
        return False
    found = False
    for secret in secrets:
        found |= hmac.compare_digest(given, secret)
    return found
