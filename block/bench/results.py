"""The results file: `config` (how the run was made), `requests` (one entry each) and `summary`.

Schema (all times in seconds):
  config:   free-form dict; the client writes url, endpoint, model, dataset, num_requests, qps, process,
            burstiness, seed, ignore_eos, tokenizer, max_model_len, label, policy, started_at, interrupted
  requests: list of {index, prompt_tokens, expected_output_tokens, scheduled_s, sent_s, ttft_s, e2e_s,
            tpot_s, itl_s: [..], output_tokens, status, error, instance, chunks, parse_s}
  summary:  see block.bench.metrics.summarize (ttft_s/tpot_s/itl_s/e2e_s as {mean,p50,p90,p99},
            request_throughput, output_token_throughput, completed, failed, goodput, slo_met, ...)
"""

from __future__ import annotations

import json
from pathlib import Path

from block.bench.metrics import summarize
from block.bench.record import RequestRecord

SCHEMA_VERSION = 1

__all__ = [
    "SCHEMA_VERSION",
    "RequestRecord",
    "build_results",
    "load_results",
    "record_to_dict",
    "write_results",
]


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 7)


def record_to_dict(r: RequestRecord) -> dict:
    return {
        "index": r.index,
        "prompt_tokens": r.prompt_tokens,
        "expected_output_tokens": r.expected_output_tokens,
        "scheduled_s": _round(r.scheduled_s),
        "sent_s": _round(r.sent_s),
        "ttft_s": _round(r.ttft_s),
        "e2e_s": _round(r.e2e_s),
        "tpot_s": _round(r.tpot_s),
        "itl_s": [round(g, 7) for g in r.itl_s],  # 0.1 us is far below what a client can measure
        "output_tokens": r.output_tokens,
        "status": r.status,
        "error": r.error,
        "instance": r.instance,
        "chunks": r.chunks,
        "parse_s": _round(r.parse_s),
        "priority": r.priority,
    }


def build_results(
    config: dict, requests: list[RequestRecord], duration_s: float, slos: dict[str, float]
) -> dict:
    """A complete results document, the same for live runs and the simulator."""
    return {
        "schema_version": SCHEMA_VERSION,
        "config": dict(config),
        "summary": summarize(requests, duration_s, slos),
        "requests": [record_to_dict(r) for r in requests],
    }


def write_results(results: dict, path: Path) -> None:
    import orjson

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_SERIALIZE_NUMPY))


def load_results(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read results {path}: {e}") from None
    if not isinstance(data, dict) or "summary" not in data or "config" not in data:
        raise ValueError(f"{path} is not a Block results file (no config/summary)")
    return data
