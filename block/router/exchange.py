"""One client request while the router serves it (Exchange), and the timer that stops an attempt whose
instance went silent (Watchdog).

Every way an attempt ends early is a cancellation of its task, and the Exchange records why:
- the client left (http.disconnect): the upstream request is closed, nothing is retried;
- the router shuts down and the drain time is over: the client gets a 503, or an error event when its
  stream had started;
- the watchdog: no first byte within the first-byte timeout while no response from the instance made
  progress, or a gap over the idle timeout between two chunks. Retried elsewhere when nothing went to
  the client yet (and the client is still there), else the stream ends with an error event. The
  instance is taken out for a cool-down (InstancePool.suspend) when nothing from it flowed meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from block.router.instance import Instance

CLIENT_GONE = "client_gone"
SHUTDOWN = "shutdown"


class Exchange:
    __slots__ = ("attempt", "started", "finished", "stop", "timeout", "held")

    def __init__(self) -> None:
        self.attempt: asyncio.Task[Any] | None = None  # the upstream attempt in progress
        self.started = False  # a stream's response start went to the client: no retry from now on
        self.finished = False  # the client has its whole response
        self.stop: str | None = None  # CLIENT_GONE or SHUTDOWN: no further attempt
        self.timeout: Timeout | None = None  # why the watchdog stopped the current attempt
        self.held: asyncio.Future[Any] | None = None  # while admission holds it: cancelled on a stop

    def interrupt(self, reason: str) -> None:
        if self.finished:
            return
        if self.stop is None:
            self.stop = reason
        if self.attempt is not None:
            self.attempt.cancel()
        if self.held is not None:
            self.held.cancel()


class Timeout:
    __slots__ = ("message", "kind", "instance_silent")

    def __init__(self, message: str, kind: str, instance_silent: bool) -> None:
        self.message = message
        self.kind = kind  # first_byte_timeout | idle_timeout (the upstream error metric's label)
        self.instance_silent = instance_silent  # nothing from the instance for anyone: take it out


class Watchdog:
    """One timer per attempt, re-armed lazily: the relay only records `progress_at` per chunk.

    First byte: the attempt waits while responses from the instance make progress (Instance.flowing_at:
    a queue on a busy instance that works is not a hang), so the timeout fires only when nothing from
    the instance flowed for all of it. Idle: a stream that gets nothing for `idle_s` is cut whatever the
    others get; the instance is taken out only when nothing from it flowed over that time."""

    __slots__ = (
        "exchange",
        "inst",
        "first_byte_s",
        "idle_s",
        "progress_at",
        "waiting_first",
        "sending",
        "_handle",
    )

    def __init__(self, exchange: Exchange, inst: Instance, first_byte_s: float, idle_s: float) -> None:
        self.exchange = exchange
        self.inst = inst
        self.first_byte_s = first_byte_s
        self.idle_s = idle_s
        self.progress_at = time.monotonic()
        self.waiting_first = True
        self.sending = False  # waiting for the client to take a chunk: not the instance's time
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._handle = asyncio.get_running_loop().call_later(self.first_byte_s, self._check)

    def first_byte(self, now: float) -> None:
        self.waiting_first = False
        self.progress_at = now

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        task = self.exchange.attempt
        if task is None or task.done() or self.exchange.finished:
            return
        now = time.monotonic()
        if self.waiting_first:
            limit = self.first_byte_s
            wait = max(self.progress_at, self.inst.flowing_at) + limit - now
        else:
            limit = self.idle_s
            wait = limit if self.sending else self.progress_at + limit - now
        if wait > 0:
            self._handle = asyncio.get_running_loop().call_later(wait, self._check)
            return
        silent = self.inst.flowing_at <= now - limit
        if self.waiting_first:
            self.exchange.timeout = Timeout(
                f"no first byte from {self.inst.id} within {limit:g} s", "first_byte_timeout", silent
            )
        else:
            self.exchange.timeout = Timeout(
                f"{self.inst.id} sent nothing for {limit:g} s mid-response", "idle_timeout", silent
            )
        self._handle = None
        task.cancel()
