"""Engine-side latency counters from a vLLM server's /metrics, when it has them.

vLLM stamps inter-token latency and prefill time with the engine core's own clock, so these sums are
immune to the API-server process being descheduled (on a busy 2-core host it can sit on finished tokens
and flush them in one burst, which wrecks client-side token timing). Probes read the counters before and
after each probe; the deltas are that probe's alone because probes run one at a time.
"""

from __future__ import annotations

import re

import httpx

ITL = "vllm:inter_token_latency_seconds"
PREFILL = "vllm:request_prefill_time_seconds"
# Stamped by the API server when it handles the first token (Block's emulator: by its engine loop).
TTFT = "vllm:time_to_first_token_seconds"
_LINE = re.compile(r"^(vllm:[a-z_]+)_(sum|count)(?:\{[^}]*\})? ([0-9.eE+-]+)$")

Counters = dict[str, tuple[float, float]]  # histogram name -> (sum, count), summed over label sets


def read_histograms(url: str) -> Counters:
    """Sum and count of ITL, PREFILL and TTFT, those the server has (none if /metrics is unreachable)."""
    try:
        text = httpx.get(url.rstrip("/") + "/metrics", timeout=5.0).text
    except httpx.HTTPError:
        return {}
    out: dict[str, list[float]] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m and m.group(1) in (ITL, PREFILL, TTFT):
            acc = out.setdefault(m.group(1), [0.0, 0.0])
            acc[0 if m.group(2) == "sum" else 1] += float(m.group(3))
    return {k: (v[0], v[1]) for k, v in out.items()}


def read_counters(url: str) -> Counters | None:
    """The engine-clock counters probes need (vLLM only), or None."""
    out = read_histograms(url)
    return out if ITL in out and PREFILL in out else None


def mean_delta(before: Counters, after: Counters, name: str) -> tuple[float, int]:
    """(mean of the new observations, how many there were)."""
    s = after[name][0] - before[name][0]
    n = int(round(after[name][1] - before[name][1]))
    return (s / n if n > 0 else float("nan")), n
