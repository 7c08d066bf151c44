"""Embeddings of whole prompt lists cached on disk, so re-training or re-evaluating a MiniLM model does not
re-run the encoder (embedding ShareGPT's 13k training prompts takes minutes on 2 cores).

The key hashes the encoder's fingerprint (weights and token window) and every prompt in order: the same
dataset, split and model give the same file; any change gives another.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from block.length.minilm import MiniLMEncoder


def cache_dir() -> Path:
    base = Path(os.environ.get("BLOCK_CACHE_DIR") or Path.home() / ".cache" / "block")
    return base / "length" / "embeddings"


def cache_key(encoder: MiniLMEncoder, texts: Sequence[str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(encoder.fingerprint.encode())
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")  # separator: ["ab"] and ["a", "b"] differ
    return h.hexdigest()


def cached_embeddings(
    encoder: MiniLMEncoder,
    texts: Sequence[str],
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """encoder.encode(texts), from the cache when this exact list was embedded before.
    `progress(done, total)` follows the encoder (it is not called on a cache hit)."""
    path = cache_dir() / f"minilm-{cache_key(encoder, texts)}.npy"
    if path.is_file():
        with contextlib.suppress(OSError, ValueError):
            cached = np.load(path, allow_pickle=False)
            if cached.shape == (len(texts), encoder.dim):
                return cached
    done = 0

    def step(k: int) -> None:
        nonlocal done
        done += k
        if progress is not None:
            progress(done, len(texts))

    emb = encoder.encode(texts, progress=step)
    with contextlib.suppress(OSError):  # a read-only home only costs a re-embedding next time
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npy")
        np.save(tmp, emb)
        tmp.replace(path)
    return emb
