"""`hashtrace:PATH`: token-free traces with prefix block ids (the public Mooncake-style JSONL format).

One JSON object per line: `timestamp` (ms), `input_length`, `output_length` and `hash_ids`, the ids of
the prompt's 512-token blocks in order (the last may be partial); two requests with equal ids at the start
share that prefix. The replay synthesises each trace block's text from its id: 512 single-token words
drawn from a generator seeded by the id, so equal ids give equal tokens, and words are whole pre-tokens
(" word"), so a block's tokens do not change whatever comes before or after it. A live engine that
tokenises the prompt therefore computes the same chained block hashes where the trace's ids are equal;
`Sample.prefix_hashes` are those hashes (16-token engine blocks, 32 per trace block, chained as
block.prefix.chain_hashes chains them). Tokens beyond the ids' blocks are filler unique to the request.

A replay longer than the trace (more requests asked for than it holds) repeats it end to end; each round
draws its blocks from its own generators, so a round shares prefixes within itself as the trace does but
never with another round. Requests that do not fit `max_model_len` are dropped and counted.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from block.prefix import chain_hashes
from block.workload.sample import Sample
from block.workload.synthesis import word_pool
from block.workload.tokenizer import get_tokenizer

TRACE_BLOCK_TOKENS = 512
_FIELDS = ("timestamp", "input_length", "output_length", "hash_ids")
_BLOCK_SEED = 0x4A54  # trace-block words: seeded by (this, round, id)
_FILLER_SEED = 0xF111  # filler words: seeded by (this, round, line)
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HashTraceRow:
    line: int  # 1-based line of the file, which also seeds the request's filler
    arrival_s: float
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]


def read_hashtrace(path: Path) -> list[HashTraceRow]:
    """Every request of the file, in file order; a bad line raises ValueError naming it."""
    rows = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            if line.strip():
                rows.append(_parse_line(line, path, i))
    return rows


def _parse_line(line: str, path: Path, i: int) -> HashTraceRow:
    where = f"{path}:{i}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object with {', '.join(_FIELDS)}")
    missing = [k for k in _FIELDS if k not in obj]
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(missing)}")
    stamp = obj["timestamp"]
    if not _is_number(stamp):
        raise ValueError(f"{where}: timestamp must be a number (ms), got {stamp!r}")
    lengths = [obj["input_length"], obj["output_length"]]
    if not all(_is_int(x) and x >= 0 for x in lengths):
        raise ValueError(f"{where}: input_length and output_length must be integers >= 0, got {lengths}")
    ids = obj["hash_ids"]
    if not isinstance(ids, list) or not all(_is_int(h) for h in ids):
        raise ValueError(f"{where}: hash_ids must be a list of integers, got {str(ids)[:80]}")
    return HashTraceRow(i, float(stamp) / 1000.0, int(lengths[0]), int(lengths[1]), tuple(ids))


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and np.isfinite(x)


@cache
def _vocabulary(tokenizer: str) -> tuple[tuple[str, ...], np.ndarray]:
    """Single-token words and their token ids."""
    pool = word_pool(tokenizer)
    ids = get_tokenizer(tokenizer).encode_batch(list(pool))
    return pool, np.array([x[0] for x in ids], dtype=np.int64)


class BlockText:
    """Words of trace blocks, drawn once per (round, id) and kept for the replay with their text."""

    def __init__(self, tokenizer: str) -> None:
        self.words, self.token_ids = _vocabulary(tokenizer)
        self._word_array = np.array(self.words, dtype=object)  # joins without a Python loop per word
        self.blocks: dict[tuple[int, int], np.ndarray] = {}
        self.texts: dict[tuple[int, int], str] = {}

    def block(self, rnd: int, hash_id: int) -> np.ndarray:
        """The word indices of block `hash_id` in replay round `rnd` (uint16: pools hold < 65,536)."""
        key = (rnd, hash_id)
        words = self.blocks.get(key)
        if words is None:
            rng = np.random.default_rng([_BLOCK_SEED, rnd, hash_id & (2**63 - 1), hash_id < 0])
            words = rng.integers(len(self.words), size=TRACE_BLOCK_TOKENS, dtype=np.uint16)
            self.blocks[key] = words
            self.texts[key] = self.text(words)
        return words

    def text(self, words: np.ndarray) -> str:
        return "".join(self._word_array[words].tolist())

    def sample(self, row: HashTraceRow, rnd: int, arrival_s: float) -> Sample:
        """The row's request: its blocks' words, the last one cut, or filler past them, to input_length."""
        texts, words = [], []
        left = row.input_length
        for h in row.hash_ids:
            if left <= 0:
                break
            block = self.block(rnd, h)
            if left >= TRACE_BLOCK_TOKENS:
                texts.append(self.texts[(rnd, h)])
            else:
                block = block[:left]
                texts.append(self.text(block))
            words.append(block)
            left -= len(block)
        if left > 0:
            rng = np.random.default_rng([_FILLER_SEED, rnd, row.line])
            words.append(rng.integers(len(self.words), size=left, dtype=np.uint16))
            texts.append(self.text(words[-1]))
        ids = self.token_ids[np.concatenate(words)].tolist() if words else []
        return Sample(
            prompt="".join(texts),
            prompt_tokens=len(ids),
            output_tokens=row.output_length,
            arrival_s=arrival_s,
            prefix_hashes=chain_hashes(ids),
        )


def hashtrace_samples(
    path: Path,
    num_requests: int | None,
    tokenizer: str = "llama3",
    max_model_len: int = 4096,
    min_prompt_tokens: int = 4,
) -> list[Sample]:
    """The first `num_requests` requests that fit, in time order (the trace replayed end to end when it
    holds fewer), arrivals in seconds from the first."""
    rows = sorted(read_hashtrace(path), key=lambda r: r.arrival_s)
    fits = [
        r
        for r in rows
        if r.input_length >= min_prompt_tokens
        and r.output_length >= 1
        and r.input_length + r.output_length <= max_model_len
    ]
    if len(fits) < len(rows):
        log.warning(
            "hashtrace %s: dropped %d of %d requests (prompt < %d, no output, or prompt + output > "
            "max_model_len %d)",
            path,
            len(rows) - len(fits),
            len(rows),
            min_prompt_tokens,
            max_model_len,
        )
    if not fits:
        raise ValueError(f"hashtrace {path}: no request passes the filters (max_model_len {max_model_len})")
    n = len(fits) if num_requests is None else num_requests
    t0 = fits[0].arrival_s
    span = fits[-1].arrival_s - t0
    gap = span / (len(fits) - 1) if len(fits) > 1 else 1.0
    text = BlockText(tokenizer)
    out = []
    for k in range(n):
        rnd, row = divmod(k, len(fits))
        r = fits[row]
        out.append(text.sample(r, rnd, r.arrival_s - t0 + rnd * (span + gap)))
    return out
