"""Run a RouterApp under uvicorn with uvloop and httptools (the fastest pure-Python-host stack).

Shutdown (SIGTERM or SIGINT) is bounded: uvicorn stops accepting and closes idle connections, requests
in flight may finish for `drain_timeout_s`, then the proxy cuts what is left (a stream gets an error
event, anything else a 503) and the process exits. uvicorn's own graceful timeout, a little longer, is
only the backstop for a handler that does not end after the cut.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
from collections.abc import Callable

import uvicorn

from block.http_limits import HttpLimits
from block.openai_api.prompt_tokens import PromptIds
from block.router.app import RouterApp
from block.router.config import RouterConfig


def raise_fd_limit() -> int:
    """Thousands of streams need two sockets each (client side and instance side)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    return soft


def http_limits(config: RouterConfig) -> HttpLimits:
    return HttpLimits(config.max_header_bytes, config.header_timeout_s, config.body_timeout_s)


def uvicorn_config(app: RouterApp, config: RouterConfig) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        **http_limits(config).uvicorn_options(),
        lifespan="on",
        access_log=False,
        log_level=config.log_level.lower(),
        backlog=8192,
        timeout_keep_alive=60,
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=config.drain_timeout_s + CUT_GRACE_S,
    )


CUT_GRACE_S = 5.0  # after the cut, for handlers to send their error and end

log = logging.getLogger("block.router")


class DrainingServer(uvicorn.Server):
    """uvicorn's server with the router's bounded drain (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, app: RouterApp) -> None:
        super().__init__(config)
        self.router = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        proxy = self.router.proxy
        drain = self.router.config.drain_timeout_s
        if proxy.live:
            log.info("draining %d request(s) for up to %g s", len(proxy.live), drain)

        def cut() -> None:
            if n := proxy.cut_all():
                log.warning("drain time over: cut %d request(s) still in flight", n)

        timer = asyncio.get_running_loop().call_later(drain, cut)
        try:
            await super().shutdown(sockets)
        finally:
            timer.cancel()


def serve(config: RouterConfig, prompt_layout: tuple[Callable[[str], int], PromptIds] | None = None) -> None:
    """Run the router until stopped; `prompt_layout` is the tokenizer the CLI already loaded (to turn a bad
    --tokenizer into a one-line error), so a large tokenizer.json is read once."""
    raise_fd_limit()
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    count_tokens, prompt_ids = prompt_layout or (None, None)
    app = RouterApp(config, count_tokens, prompt_ids)
    DrainingServer(uvicorn_config(app, config), app).run()
