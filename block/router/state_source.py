"""Where an instance's queue state comes from, detected per instance.

- Block engine: GET /state is the exact snapshot (Snapshot.to_dict()).
- Stock vLLM (/state answers 404): GET /metrics gives running/waiting counts, KV usage and the cache
  config; the queue itself is rebuilt from the router's own record of what it sent there and how many
  tokens have streamed back. Requests from other routers are invisible on this path except through
  the counts; that is the price of needing no engine patch.
"""

from __future__ import annotations

import re
import time
from typing import Any

import aiohttp
import orjson

from block.replica import ReplicaConfig, RequestState, Snapshot
from block.router.instance import BLOCK, UNKNOWN, VLLM, Instance


async def detect_kind(session: aiohttp.ClientSession, inst: Instance, timeout: float) -> str:
    try:
        async with session.get(inst.url + "/state", timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            if resp.status == 200:
                await resp.read()
                return BLOCK
            if resp.status in (404, 405):
                return VLLM
    except (aiohttp.ClientError, TimeoutError, OSError):
        pass
    return UNKNOWN


async def fetch_block_state(session: aiohttp.ClientSession, inst: Instance, timeout: float) -> dict[str, Any]:
    async with session.get(inst.url + "/state", timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
        resp.raise_for_status()
        state = orjson.loads(await resp.read())
    if not isinstance(state, dict):
        raise ValueError("/state did not return an object")
    return state


def observe(tracker: Any, snapshot: Snapshot | None, state: dict[str, Any] | None, at: float) -> None:
    """Hand a new state to a tracker; the real one reads extra /state fields (the step in flight)."""
    if state is not None and hasattr(tracker, "observe_state"):
        tracker.observe_state(state, at)
    else:
        tracker.observe(snapshot if snapshot is not None else Snapshot.from_dict(state or {}), at)


_SAMPLE = re.compile(r"^(vllm:[a-z_]+)(\{[^}]*\})?\s+(\S+)", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def parse_vllm_metrics(text: str) -> dict[str, Any]:
    """The few vLLM gauges the router uses; values of several model labels are summed."""
    out: dict[str, Any] = {"running": 0.0, "waiting": 0.0, "kv_usage": None, "cache_config": {}}
    for name, labels, value in _SAMPLE.findall(text):
        if name == "vllm:num_requests_running":
            out["running"] += float(value)
        elif name == "vllm:num_requests_waiting":
            out["waiting"] += float(value)
        elif name in ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"):  # the latter: older vLLM
            out["kv_usage"] = float(value)
        elif name == "vllm:cache_config_info" and labels:
            out["cache_config"] = dict(_LABEL.findall(labels))
    return out


def vllm_snapshot(metrics: dict[str, Any], inst: Instance, base: ReplicaConfig, now: float) -> Snapshot:
    """Rebuild a queue from the router's record: requests that streamed tokens are decoding; of the
    rest, in send order, as many as vLLM reports running are prefilling and the others wait."""
    cc = metrics["cache_config"]
    cfg = base
    overrides = {
        k: int(float(cc[k])) for k in ("block_size", "num_gpu_blocks") if cc.get(k) not in (None, "None")
    }
    if overrides:
        cfg = ReplicaConfig(**{**base.to_dict(), **overrides})
    decoding, others = [], []
    for rid, s in inst.sent.items():
        if s.streamed_tokens > 0:
            computed = s.prompt_tokens + s.streamed_tokens - 1
            decoding.append(
                RequestState(
                    rid, s.sent_at, s.prompt_tokens, computed, s.streamed_tokens, s.expected_output_tokens
                )
            )
        else:
            others.append(RequestState(rid, s.sent_at, s.prompt_tokens, 0, 0, s.expected_output_tokens))
    prefilling = max(0, int(metrics["running"]) - len(decoding))
    running = decoding + others[:prefilling]
    waiting = others[prefilling:]
    usage = metrics["kv_usage"]
    free = None if usage is None else max(0, round(cfg.num_gpu_blocks * (1.0 - float(usage))))
    return Snapshot(config=cfg, now=now, running=running, waiting=waiting, free_blocks=free, profile="")


async def fetch_vllm_snapshot(
    session: aiohttp.ClientSession, inst: Instance, base: ReplicaConfig, timeout: float
) -> tuple[Snapshot, dict[str, Any]]:
    async with session.get(inst.url + "/metrics", timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
        resp.raise_for_status()
        metrics = parse_vllm_metrics(await resp.text())
    return vllm_snapshot(metrics, inst, base, time.monotonic()), metrics
