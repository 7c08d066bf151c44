"""Who hears of requests: the typed protocol for routed / tokens / finished events, and the fan-out.

The data layer tells its own trackers first-hand; everything else that needs to hear about requests is a
`RequestListener`, registered with a `Listeners` fan-out: the stock-vLLM state source (its record of what
was sent and what streamed back), the router's sidecar notices, auto-provisioning live and simulated.
Adding one is a class with the methods it needs, registered where requests are routed
(`InstancePool.listeners` or an instance's own, `Cluster.listeners`).

Order: listeners hear of a route before the tracker folds it in, and of a finish after the tracker has
let it go, so they see the instance as the decision saw it (a forecast without the new request) and as
it is once the request is gone (the in-flight count without it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from block.request import Forecast, RoutingRequest


@dataclass(frozen=True, slots=True)
class Routed:
    request: RoutingRequest
    at: float  # when it was routed (the caller's clock)
    forecast: Forecast | None = None  # the decision's forecast for this instance, when it made one


class RequestListener(Protocol):
    """Told of the requests sent to an instance (`instance` is its id). Subclass it and override what you
    need (the others do nothing): the fan-out only calls a listener for the events it overrides."""

    def routed(self, instance: str, routed: Routed) -> None:
        return None

    def tokens(self, instance: str, request_id: str, count: int, at: float) -> None:
        """`count` more output tokens of a request streamed back."""
        return None

    def finished(self, instance: str, request_id: str, at: float) -> None:
        return None


class Listeners:
    """Listeners in registration order, each called only for the events it overrides."""

    def __init__(self, *listeners: RequestListener) -> None:
        self._all: list[RequestListener] = []
        self.on_routed: list[RequestListener] = []
        self.on_tokens: list[RequestListener] = []
        self.on_finished: list[RequestListener] = []
        for listener in listeners:
            self.add(listener)

    def add(self, listener: RequestListener) -> None:
        self._all.append(listener)
        self._sort()

    def remove(self, listener: RequestListener) -> None:
        if listener in self._all:
            self._all.remove(listener)
            self._sort()

    def _sort(self) -> None:
        def hears(name: str) -> list[RequestListener]:
            return [x for x in self._all if getattr(type(x), name) is not getattr(RequestListener, name)]

        self.on_routed, self.on_tokens, self.on_finished = hears("routed"), hears("tokens"), hears("finished")

    def routed(self, instance: str, routed: Routed) -> None:
        for listener in self.on_routed:
            listener.routed(instance, routed)

    def tokens(self, instance: str, request_id: str, count: int, at: float) -> None:
        for listener in self.on_tokens:
            listener.tokens(instance, request_id, count, at)

    def finished(self, instance: str, request_id: str, at: float) -> None:
        for listener in self.on_finished:
            listener.finished(instance, request_id, at)
