"""Who may call what: the bearer credentials of the proxy (API key) and of the operator endpoints
(admin token), checked one way everywhere.

- Completions and GET /v1/models: the API key, when one is set (or any of the keys given as
  KEY:PRIORITY, whose priority is then the default of that key's requests under admission).
- POST /instances and DELETE /instances/{id}: the admin token, or the API key when no admin token is
  set. With neither configured they are refused (403) unless the router runs with
  --allow-admin-without-auth: anyone who can add an instance receives other users' prompts.
- GET /instances (it shows upstream addresses and connection errors): the API key or the admin token
  when either is set; open otherwise.

The `Authorization` scheme is matched case-insensitively (RFC 7235) and secrets are compared in
constant time."""

from __future__ import annotations

from dataclasses import dataclass, field

from block.bearer import bearer_token, matches

# Every 401 names the scheme the client should use (RFC 7235, section 3.1).
CHALLENGE = [(b"www-authenticate", b"Bearer")]

API_KEY_MISSING = "invalid or missing API key (Authorization: Bearer KEY)"
CREDENTIAL_MISSING = "invalid or missing credential (Authorization: Bearer ADMIN_TOKEN or API_KEY)"
ADMIN_DISABLED = (
    "adding and removing instances is disabled: no credential is configured; start the router "
    "with --admin-token TOKEN (or --api-key KEY), or pass --allow-admin-without-auth on a trusted network"
)


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int  # 401 (wrong or missing credential) or 403 (the endpoint is disabled)
    message: str
    code: str


@dataclass(frozen=True, slots=True)
class Guard:
    """The router's credentials and what each kind of endpoint needs. check_* return None when allowed."""

    api_key: str | None = None
    admin_token: str | None = None
    allow_admin_without_auth: bool = False
    api_keys: dict[str, int] = field(default_factory=dict)  # more client keys, each with a priority

    def _secrets(self, *values: str | None) -> list[bytes]:
        return [v.encode() for v in values if v is not None]

    def _client_keys(self) -> list[str | None]:
        return [self.api_key, *self.api_keys]

    def client_priority(self, authorization: str | bytes | None) -> int | None:
        """The priority of the key the client presented (--api-key KEY:PRIORITY); None without one."""
        token = bearer_token(authorization)
        for key, priority in self.api_keys.items():
            if matches(token, [key.encode()]):
                return priority
        return None

    def check_client(self, authorization: str | bytes | None) -> Refusal | None:
        """Completions and /v1/models."""
        secrets = self._secrets(*self._client_keys())
        if not secrets or matches(bearer_token(authorization), secrets):
            return None
        return Refusal(401, API_KEY_MISSING, "invalid_api_key")

    def check_read(self, authorization: str | bytes | None) -> Refusal | None:
        """GET /instances."""
        secrets = self._secrets(self.admin_token, *self._client_keys())
        if not secrets or matches(bearer_token(authorization), secrets):
            return None
        return Refusal(401, CREDENTIAL_MISSING, "invalid_credential")

    def check_admin(self, authorization: str | bytes | None) -> Refusal | None:
        """POST /instances, DELETE /instances/{id}."""
        keys = [self.admin_token] if self.admin_token is not None else self._client_keys()
        secrets = self._secrets(*keys)
        if not secrets:
            return None if self.allow_admin_without_auth else Refusal(403, ADMIN_DISABLED, "admin_disabled")
        if matches(bearer_token(authorization), secrets):
            return None
        which = "admin token" if self.admin_token is not None else "API key"
        return Refusal(401, f"invalid or missing {which} (Authorization: Bearer ...)", "invalid_credential")
