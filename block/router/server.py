"""Run a RouterApp under uvicorn with uvloop and httptools (the fastest pure-Python-host stack)."""

from __future__ import annotations

import logging
import resource

import uvicorn

from block.http_limits import HttpLimits
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
    )


def serve(config: RouterConfig) -> None:
    raise_fd_limit()
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    app = RouterApp(config)
    uvicorn.Server(uvicorn_config(app, config)).run()
