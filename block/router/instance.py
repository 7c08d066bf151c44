"""One configured upstream instance: its address, health, state source, tracker (the policies' view of
it) and the listeners that hear of the requests sent there."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from block.fleet.kv_events import KvEventFeed
from block.fleet.listeners import Listeners
from block.fleet.sources import StateSource
from block.fleet.sources.lean_get import LeanGet
from block.fleet.tracker import InstanceTracker
from block.router.sidecar import SidecarClient


def instance_id(url: str) -> str:
    """A stable id from the URL, the same in every router in front of the same fleet."""
    parts = urlsplit(url)
    path = parts.path.strip("/").replace("/", "_")
    return parts.netloc + (f"_{path}" if path else "")


@dataclass(eq=False)
class Instance:
    url: str
    predictor_url: str | None = None
    profile: str | None = None  # for stock vLLM, named by whoever added it (discovery's pod label)
    id: str = ""
    healthy: bool = False  # in rotation; starts out until the first good health check
    source: StateSource | None = None  # where its state comes from, once detected
    accepts_expected_field: bool = False  # body field expected_output_tokens (the source says)
    sidecar: SidecarClient | None = None  # when a --predictor is configured for this instance
    kv_events: KvEventFeed | None = None  # stock vLLM publishing its KV-cache events (--kv-events)
    health_get: LeanGet | None = None  # its GET /health over a kept connection (plain http:// only)
    tracker: InstanceTracker | None = None  # the policies' view; made once the source (and profile) is known
    listeners: Listeners = field(default_factory=Listeners)  # its source and sidecar, when they listen
    consecutive_failures: int = 0
    last_error: str | None = None
    last_state_error: str | None = None
    state_ok_at: float = float("-inf")  # time.monotonic() of the last good state fetch
    data_at: float = float("-inf")  # time.monotonic() when a proxied response last delivered bytes
    # ... and when one last made progress past its first bytes (a stream's later chunks, a whole answer):
    # the watchdogs' sign of an instance that works, which a stalling one sending first tokens is not
    flowing_at: float = float("-inf")
    removed: bool = False
    draining: bool = False  # auto-provisioning retires it: no new requests, in-flight ones finish
    provisioned: bool = False  # added by the auto-provisioner (retired before the configured ones)
    suspended_until: float = float("-inf")  # out for a timeout: health checks cannot bring it back before
    timeouts_in_a_row: int = 0  # timeouts without a completed response in between (doubles the cool-down)
    models: frozenset[str] | None = None  # from its GET /v1/models (served_models.py); None: not known
    models_asked_at: float = float("-inf")  # time.monotonic() when it was last asked
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # Ready-made bytes for the hot path.
    completions_url: str = ""
    chat_url: str = ""
    id_header: bytes = b""

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        self.id = self.id or instance_id(self.url)
        self.completions_url = self.url + "/v1/completions"
        self.chat_url = self.url + "/v1/chat/completions"
        self.id_header = self.id.encode()

    @property
    def kind(self) -> str:
        """The state source's name ("block", "vllm"), "unknown" before it is detected."""
        return "unknown" if self.source is None else self.source.name

    @property
    def routable(self) -> bool:
        return self.healthy and self.tracker is not None and not self.removed and not self.draining

    @property
    def state(self) -> str:
        """starting (never in rotation yet), active, unhealthy or draining (for GET /instances)."""
        if self.draining:
            return "draining"
        if self.routable:
            return "active"
        return "starting" if self.tracker is None else "unhealthy"
