"""The default length model: shipped in the package, or trained on first use and cached."""

from __future__ import annotations

import contextlib
import os
import threading
from importlib import resources
from pathlib import Path

from block.length.estimator import LengthEstimator

DEFAULT_FILE = "default_tfidf.npz"
DEFAULT_DATASET = "sharegpt"
DEFAULT_SEED = 0

_lock = threading.Lock()
_cached: LengthEstimator | None = None


def shipped_model_path() -> Path:
    """Where the package keeps its trained default model (it may be missing in a source checkout)."""
    return Path(str(resources.files("block.length").joinpath("data", DEFAULT_FILE)))


def cached_model_path() -> Path:
    base = Path(os.environ.get("BLOCK_CACHE_DIR") or Path.home() / ".cache" / "block")
    return base / "length" / DEFAULT_FILE


def load_default_estimator() -> LengthEstimator:
    """The default estimator, loaded once per process.

    Order: the file shipped in the package; else a copy trained earlier on this machine; else train one
    now on ShareGPT (about a minute, with a progress bar) and cache it for next time.
    """
    global _cached
    with _lock:
        if _cached is None:
            _cached = _load_or_train()
        return _cached


def _load_or_train() -> LengthEstimator:
    for path in (shipped_model_path(), cached_model_path()):
        if path.is_file():
            try:
                return LengthEstimator.load(path)
            except ValueError:
                continue  # damaged or from another format version: try the next source
    from block.length.train_cli import train_with_progress

    estimator = train_with_progress(
        DEFAULT_DATASET, "tfidf", DEFAULT_SEED, title="training the default length model"
    )
    with contextlib.suppress(OSError):  # a read-only home only costs a retrain next time
        estimator.save(cached_model_path())
    return estimator
