"""Readers for length-only request traces: arXiv summarisation stats, BurstGPT, Azure LLM, generic JSONL.

Each reader returns TraceRows (lengths, an arrival time when the trace has one, and prompt text only when
the file carries it); prompts of the right length are synthesised later, for the sampled rows only.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True, slots=True)
class TraceRow:
    prompt_tokens: int
    output_tokens: int
    arrival_s: float | None = None
    prompt: str | None = None


def _open_csv(path: Path, required: list[str]) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (has: {reader.fieldnames})")
        return list(reader)


def _int(value: str, path: Path, line: int) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        raise ValueError(f"{path}:{line}: not a number: {value!r}") from None


def read_arxiv(path: Path) -> list[TraceRow]:
    """Vidur's arXiv summarisation stats: `num_prefill_tokens,num_decode_tokens,...`."""
    reader = _open_csv(path, ["num_prefill_tokens", "num_decode_tokens"])
    return [
        TraceRow(_int(r["num_prefill_tokens"], path, i), _int(r["num_decode_tokens"], path, i))
        for i, r in enumerate(reader, start=2)
    ]


def read_burstgpt(path: Path) -> list[TraceRow]:
    """BurstGPT: `Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type` (seconds)."""
    reader = _open_csv(path, ["Timestamp", "Request tokens", "Response tokens"])
    rows = []
    for i, r in enumerate(reader, start=2):
        try:
            ts = float(r["Timestamp"])
        except ValueError:
            raise ValueError(f"{path}:{i}: bad Timestamp {r['Timestamp']!r}") from None
        rows.append(TraceRow(_int(r["Request tokens"], path, i), _int(r["Response tokens"], path, i), ts))
    return _rebase(rows)


def _azure_time(value: str, path: Path, line: int) -> float:
    # Azure writes 7 fractional digits ("2023-11-16 18:15:46.6805900"), more than strptime's %f takes.
    whole, _, frac = value.strip().partition(".")
    try:
        seconds = datetime.fromisoformat(whole).timestamp()
        return seconds + (float("0." + frac) if frac else 0.0)
    except ValueError:
        raise ValueError(f"{path}:{line}: bad TIMESTAMP {value!r}") from None


def read_azure(path: Path) -> list[TraceRow]:
    """Azure LLM inference trace: `TIMESTAMP,ContextTokens,GeneratedTokens`."""
    reader = _open_csv(path, ["TIMESTAMP", "ContextTokens", "GeneratedTokens"])
    rows = [
        TraceRow(
            _int(r["ContextTokens"], path, i),
            _int(r["GeneratedTokens"], path, i),
            _azure_time(r["TIMESTAMP"], path, i),
        )
        for i, r in enumerate(reader, start=2)
    ]
    return _rebase(rows)


def read_jsonl(path: Path, tokenizer: str = "llama3") -> list[TraceRow]:
    """One JSON object per line: `prompt` (text) or `prompt_tokens`, `output_tokens`, optional `timestamp`."""
    from block.workload.tokenizer import get_tokenizer

    rows = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                prompt = obj.get("prompt")
                if prompt is not None:
                    prompt_tokens = get_tokenizer(tokenizer).count(str(prompt))
                else:
                    prompt_tokens = int(obj["prompt_tokens"])
                output_tokens = int(obj["output_tokens"])
                ts = obj.get("timestamp", obj.get("arrival_s"))
                arrival = None if ts is None else float(ts)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
                raise ValueError(
                    f"{path}:{i}: expected prompt or prompt_tokens, output_tokens ({type(e).__name__}: {e})"
                ) from None
            rows.append(TraceRow(prompt_tokens, output_tokens, arrival, prompt))
    if any(r.arrival_s is None for r in rows):
        return [TraceRow(r.prompt_tokens, r.output_tokens, None, r.prompt) for r in rows]
    return _rebase(rows)


def _rebase(rows: list[TraceRow]) -> list[TraceRow]:
    """Sort by time and count arrivals from the first request."""
    if not rows:
        return rows
    rows = sorted(rows, key=lambda r: r.arrival_s)
    t0 = rows[0].arrival_s
    return [TraceRow(r.prompt_tokens, r.output_tokens, r.arrival_s - t0, r.prompt) for r in rows]
