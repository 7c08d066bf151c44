"""Stock vLLM: GET /metrics plus the router's own record of what it sent there and what streamed back.

/metrics gives running/waiting counts, KV usage and the cache config; the queue itself is rebuilt from the
requests this source heard were routed here and how many tokens each has streamed back. Requests from
other routers are invisible on this path except through the counts; that is the price of needing no
engine patch. It is the fallback kind: any instance that is not a Block engine is read this way.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from block.fleet.listeners import Routed
from block.fleet.sources.base import Reading, StateSource
from block.replica import ReplicaConfig, RequestState, Snapshot


@dataclass(slots=True)
class SentRequest:
    prompt_tokens: int
    expected_output_tokens: int
    sent_at: float
    streamed_tokens: int = 0  # output tokens seen streaming back so far


class VllmMetrics(StateSource):
    name = "vllm"
    reads = "/metrics+router"

    def __init__(self, url: str, base_config: ReplicaConfig, read_period_s: float | None = None) -> None:
        super().__init__(url, base_config, read_period_s)
        self.sent: dict[str, SentRequest] = {}  # in flight, in send order
        self.metrics: dict[str, Any] | None = None  # the last /metrics read

    @classmethod
    async def detect(cls, session: aiohttp.ClientSession, url: str, timeout: float) -> bool | None:
        return True  # the fallback: the first read tells whether /metrics answers

    async def read(self, session: aiohttp.ClientSession, timeout: float) -> Reading:
        async with session.get(self.url + "/metrics", timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            resp.raise_for_status()
            metrics = parse_vllm_metrics(await resp.text())
        self.metrics = metrics
        return Reading(vllm_snapshot(metrics, self.sent, self.base_config, time.monotonic()))

    def recount(self, now: float) -> Reading | None:
        """The queue rebuilt from the record (which tokens streamed back since), with the last read's
        counts and cache figures: between reads, only the split of requests that have not streamed yet
        into prefilling and waiting is as old as that read."""
        if self.metrics is None:
            return None
        return Reading(vllm_snapshot(self.metrics, self.sent, self.base_config, now))

    # -- what it hears ---------------------------------------------------------------------------

    def routed(self, instance: str, routed: Routed) -> None:
        request = routed.request
        self.sent[request.id] = SentRequest(request.prompt_tokens, request.expected_output_tokens, routed.at)

    def tokens(self, instance: str, request_id: str, count: int, at: float) -> None:
        record = self.sent.get(request_id)
        if record is not None:
            record.streamed_tokens += count

    def finished(self, instance: str, request_id: str, at: float) -> None:
        self.sent.pop(request_id, None)


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


def vllm_snapshot(
    metrics: dict[str, Any], sent: dict[str, SentRequest], base: ReplicaConfig, now: float
) -> Snapshot:
    """Rebuild a queue from the record: requests that streamed tokens are decoding; of the rest, in send
    order, as many as vLLM reports running are prefilling and the others wait."""
    cc = metrics["cache_config"]
    cfg = base
    overrides = {
        k: int(float(cc[k])) for k in ("block_size", "num_gpu_blocks") if cc.get(k) not in (None, "None")
    }
    if overrides:
        cfg = ReplicaConfig(**{**base.to_dict(), **overrides})
    decoding, others = [], []
    for rid, s in sent.items():
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
