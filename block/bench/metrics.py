"""Summary statistics of a run: latency percentiles, throughput, goodput and SLO checks.

SLOs come in two kinds, both written METRIC=SECONDS:
  per request: ttft, tpot, e2e (a request is "good" when it meets all of them; goodput counts those)
  aggregate:   METRIC_STAT with STAT in mean, p50, p90, p99 (e.g. ttft_p99=3, the paper's capacity SLO)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from block.bench.record import RequestRecord

METRICS = ("ttft", "tpot", "itl", "e2e")
STATS = ("mean", "p50", "p90", "p99")
PER_REQUEST_SLOS = ("ttft", "tpot", "e2e")


def stats(values: Iterable[float]) -> dict[str, float | None]:
    """{mean, p50, p90, p99} (numpy's linear percentiles, as vLLM's benchmark); None when empty."""
    arr = np.fromiter(values, dtype=np.float64)
    if arr.size == 0:
        return dict.fromkeys(STATS)
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {"mean": float(arr.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99)}


def parse_slos(items: Sequence[str]) -> dict[str, float]:
    """["ttft=3", "tpot_p99=0.1"] -> {"ttft": 3.0, "tpot_p99": 0.1}; ValueError names a bad item."""
    slos = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        try:
            seconds = float(value)
        except ValueError:
            seconds = float("nan")
        if not sep or not seconds > 0 or not _known_slo(key):
            raise ValueError(
                f"bad SLO {item!r}: write METRIC=SECONDS with METRIC one of {', '.join(PER_REQUEST_SLOS)} "
                f"or METRIC_STAT (e.g. ttft_p99=3)"
            )
        slos[key] = seconds
    return slos


def _known_slo(key: str) -> bool:
    if key in PER_REQUEST_SLOS:
        return True
    metric, _, stat = key.partition("_")
    return metric in METRICS and stat in STATS


def is_good(record: RequestRecord, slos: dict[str, float]) -> bool:
    """Did the request succeed within every per-request SLO?"""
    if not record.ok:
        return False
    values = {"ttft": record.ttft_s, "e2e": record.e2e_s, "tpot": record.tpot_s}
    for key in PER_REQUEST_SLOS:
        if key in slos and values[key] is not None and values[key] > slos[key]:
            return False
    return True


def summarize(
    requests: Sequence[RequestRecord], duration_s: float, slos: dict[str, float] | None = None
) -> dict:
    """The `summary` section of a results file."""
    slos = slos or {}
    done = [r for r in requests if r.ok]
    duration = max(duration_s, 1e-9)
    latency = {
        "ttft_s": stats(r.ttft_s for r in done if r.ttft_s is not None),
        "tpot_s": stats(r.tpot_s for r in done if r.tpot_s is not None),
        "itl_s": stats(gap for r in done for gap in r.itl_s),
        "e2e_s": stats(r.e2e_s for r in done),
    }
    output_tokens = sum(r.output_tokens for r in done)
    good = sum(is_good(r, slos) for r in requests)
    aggregate = {k: v for k, v in slos.items() if k not in PER_REQUEST_SLOS}
    slo_met = {}
    for key, limit in aggregate.items():
        metric, _, stat = key.partition("_")
        value = latency[f"{metric}_s"][stat]
        slo_met[key] = value is not None and value <= limit
    chunks = sum(r.chunks for r in requests)
    return {
        "completed": len(done),
        "failed": len(requests) - len(done),
        "duration_s": duration_s,
        "request_throughput": len(done) / duration,
        "output_token_throughput": output_tokens / duration,
        "input_token_throughput": sum(r.prompt_tokens for r in done) / duration,
        "total_input_tokens": sum(r.prompt_tokens for r in done),
        "total_output_tokens": output_tokens,
        **latency,
        "slos": dict(slos),
        "goodput": good / duration,  # requests per second that met every per-request SLO
        "goodput_fraction": good / len(requests) if requests else None,
        "slo_met": slo_met,
        "all_slos_met": all(slo_met.values()) and len(done) == len(requests),
        "instances": _instance_counts(requests),
        "by_priority": by_priority(requests, duration, slos),
        "client_overhead": {
            "send_lag_s": stats(r.send_lag_s for r in requests if r.send_lag_s is not None),
            "parse_s_per_chunk": sum(r.parse_s for r in requests) / chunks if chunks else None,
            "parse_s_per_request": stats(r.parse_s for r in done),
        },
    }


def by_priority(
    requests: Sequence[RequestRecord], duration_s: float, slos: dict[str, float]
) -> dict[str, dict]:
    """Per priority class (x-priority): requests, completed, rejected (HTTP 429 from admission),
    good (met every per-request SLO), goodput (good per second), on_target (good / requests) and
    the P99 TTFT of the completed ones."""
    classes: dict[int, list[RequestRecord]] = {}
    for r in requests:
        classes.setdefault(r.priority, []).append(r)
    out = {}
    for priority in sorted(classes):
        rs = classes[priority]
        good = sum(is_good(r, slos) for r in rs)
        out[str(priority)] = {
            "requests": len(rs),
            "completed": sum(r.ok for r in rs),
            "rejected": sum(r.status == 429 for r in rs),
            "good": good,
            "goodput": good / max(duration_s, 1e-9),
            "on_target": good / len(rs),
            "ttft_p99_s": stats(r.ttft_s for r in rs if r.ok and r.ttft_s is not None)["p99"],
        }
    return out


def _instance_counts(requests: Sequence[RequestRecord]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in requests:
        if r.instance is not None:
            counts[r.instance] = counts.get(r.instance, 0) + 1
    return dict(sorted(counts.items()))
