"""LengthEstimator: prompt text -> expected response length in tokens, as a point and as quantiles.

Model: per prompt, a feature row = text-model scores (the TF-IDF ridge heads of block.length.tfidf and/or
the ridge heads on MiniLM sentence embeddings of block.length.minilm_heads, or the head of a fine-tuned
encoder, block.length.finetuned) + intent features
(block.length.intent). One gradient-boosted quantile model per level in `quantiles` maps the row to
log1p(length). The point estimate is the median (it minimises absolute error). Each level is then shifted
by its conformal offset (block.length.calibrate; zero for models trained without one), and quantiles are
sorted per prompt before use, so they never cross.

Stored as one compressed .npz of plain arrays plus a JSON header: no pickle, loadable by any version.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from block.length.intent import FEATURE_NAMES, intent_features
from block.length.text import PromptText, parse
from block.length.tfidf import TfidfHeads
from block.length.trees import TreeEnsembles

FORMAT_VERSION = 1
QUANTILES = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)


class TextScorer(Protocol):
    """A text model whose score (a log-length estimate) is one input of the trees."""

    heads: Sequence[str]

    def score_many(self, texts: Sequence[PromptText]) -> np.ndarray: ...  # (n, len(heads))

    def to_arrays(self) -> dict[str, np.ndarray]: ...


def _scorer_from_arrays(kind: str, arrays: dict[str, np.ndarray]) -> TextScorer:
    if kind == "tfidf":
        return TfidfHeads.from_arrays(arrays)
    if kind == "minilm":
        from block.length.minilm_heads import MiniLMHeads  # imports the encoder only where needed

        return MiniLMHeads.from_arrays(arrays)
    if kind == "finetune":
        from block.length.finetuned import FinetunedScorer

        return FinetunedScorer.from_arrays(arrays)
    raise ValueError(f"unknown text scorer {kind!r}")


class LengthEstimator:
    """Predicts a prompt's response length (tokens). Thread-safe for prediction (no mutable state)."""

    def __init__(
        self,
        scorers: dict[str, TextScorer],
        trees: TreeEnsembles,
        quantiles: Sequence[float] = QUANTILES,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.scorers = scorers
        self.trees = trees
        self.quantiles = tuple(float(q) for q in quantiles)
        if trees.n_models != len(self.quantiles) or 0.5 not in self.quantiles:
            raise ValueError("one tree model per quantile is required, the median among them")
        if list(self.quantiles) != sorted(self.quantiles):
            raise ValueError("quantile levels must be increasing")
        self._median = self.quantiles.index(0.5)
        self.meta = dict(meta or {})
        self.meta.setdefault("feature_names", self.feature_names)
        if self.meta["feature_names"] != self.feature_names:
            # Trees index features by position: a model from other feature code would predict garbage.
            raise ValueError("length model was trained with other features than this version computes")
        # Conformal shifts (log space) per level; models saved before calibration existed have none.
        self.offsets = np.asarray(self.meta.get("calibration", [0.0] * len(self.quantiles)), dtype=np.float64)
        if self.offsets.shape != (len(self.quantiles),):
            raise ValueError("one calibration offset per quantile level is required")
        self.tokenizer_name: str = self.meta.get("tokenizer", "llama3")
        self._count_tokens = None

    @property
    def model(self) -> str:
        return str(self.meta.get("model", "tfidf"))

    # --- features ------------------------------------------------------------------------------------

    def _prompt_tokens(self, prompt: str) -> int:
        if self._count_tokens is None:
            from block.workload import get_tokenizer

            self._count_tokens = get_tokenizer(self.tokenizer_name).count
        return self._count_tokens(prompt)

    def features(self, prompts: Sequence[str], prompt_tokens: Sequence[int] | None = None) -> np.ndarray:
        """The model's input rows: text scores, then intent features (FEATURE_NAMES)."""
        texts = [parse(p) for p in prompts]
        if prompt_tokens is None:
            prompt_tokens = [self._prompt_tokens(p) for p in prompts]
        scores = [s.score_many(texts) for s in self.scorers.values()]
        intent = [
            intent_features(t.prompt, t.window, t.tokens, int(n), t.word_counts)
            for t, n in zip(texts, prompt_tokens, strict=True)
        ]
        return np.column_stack([*scores, np.asarray(intent, dtype=np.float64).reshape(len(prompts), -1)])

    @property
    def feature_names(self) -> list[str]:
        return [f"{k}_{h}" for k, s in self.scorers.items() for h in s.heads] + FEATURE_NAMES

    # --- prediction ----------------------------------------------------------------------------------

    def _log_quantiles(self, prompts: Sequence[str], prompt_tokens: Sequence[int] | None) -> np.ndarray:
        """(n, levels) log1p lengths, made non-decreasing around the median: levels below it are capped
        by the next level up, levels above it raised to the next level down. The median itself is never
        moved, so `predict` can compute the median model alone and still agree with the quantiles."""
        q = self.trees.predict(self.features(prompts, prompt_tokens)) + self.offsets
        m = self._median
        q[:, : m + 1] = np.minimum.accumulate(q[:, m::-1], axis=1)[:, ::-1]
        q[:, m:] = np.maximum.accumulate(q[:, m:], axis=1)
        return q

    def _at(self, logq: np.ndarray, qs: Sequence[float]) -> np.ndarray:
        """Lengths at levels qs, interpolated in log space between the fitted levels (clamped at the ends)."""
        grid = np.asarray(self.quantiles)
        levels = np.asarray(qs, dtype=np.float64)
        if levels.size and not ((levels > 0.0) & (levels < 1.0)).all():
            raise ValueError(f"quantile levels must be in (0, 1), got {list(qs)}")
        clamped = np.clip(levels, grid[0], grid[-1])
        hi = np.clip(np.searchsorted(grid, clamped), 1, len(grid) - 1)
        lo = hi - 1
        frac = (clamped - grid[lo]) / (grid[hi] - grid[lo])
        v = logq[:, lo] * (1.0 - frac) + logq[:, hi] * frac
        return np.maximum(1, np.rint(np.expm1(v))).astype(np.int64)

    def predict(self, prompt: str, prompt_tokens: int | None = None) -> int:
        """Point estimate (the median) of the response length in tokens, at least 1."""
        return int(self.predict_many([prompt], None if prompt_tokens is None else [prompt_tokens])[0])

    def predict_quantiles(
        self, prompt: str, qs: Sequence[float] = (0.5, 0.9), prompt_tokens: int | None = None
    ) -> dict[float, int]:
        """{q: length} for each level q; non-decreasing in q."""
        row = self.predict_quantiles_many([prompt], qs, None if prompt_tokens is None else [prompt_tokens])
        return {float(q): int(v) for q, v in zip(qs, row[0], strict=True)}

    def predict_many(self, prompts: Sequence[str], prompt_tokens: Sequence[int] | None = None) -> np.ndarray:
        """Point estimates (medians) of many prompts: only the median's trees are evaluated."""
        if not prompts:
            return np.zeros(0, dtype=np.int64)
        logm = self.trees.predict(self.features(prompts, prompt_tokens), model=self._median)[:, 0]
        logm += self.offsets[self._median]
        return np.maximum(1, np.rint(np.expm1(logm))).astype(np.int64)

    def predict_quantiles_many(
        self,
        prompts: Sequence[str],
        qs: Sequence[float] = (0.5, 0.9),
        prompt_tokens: Sequence[int] | None = None,
    ) -> np.ndarray:
        """(len(prompts), len(qs)) lengths in tokens."""
        if not prompts:
            return np.zeros((0, len(qs)), dtype=np.int64)
        return self._at(self._log_quantiles(prompts, prompt_tokens), qs)

    # --- storage -------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        for name, scorer in self.scorers.items():
            for k, v in scorer.to_arrays().items():
                arrays[f"{name}__{k}"] = v
        for k, v in self.trees.arrays.items():
            arrays[f"trees__{k}"] = v
        header = {
            "format": FORMAT_VERSION,
            "scorers": list(self.scorers),
            "quantiles": list(self.quantiles),
            "meta": self.meta,
        }
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        # Write then rename: a reader never sees half a model.
        tmp = path.with_name(path.name + ".tmp.npz")
        with tmp.open("wb") as f:
            np.savez_compressed(f, **arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> LengthEstimator:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            header = json.loads(arrays.pop("header").tobytes().decode())
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"{path}: not a length model ({e})") from None
        if header.get("format") != FORMAT_VERSION:
            raise ValueError(f"{path}: length model format {header.get('format')}, expected {FORMAT_VERSION}")
        groups: dict[str, dict[str, np.ndarray]] = {}
        for key, value in arrays.items():
            prefix, _, rest = key.partition("__")
            groups.setdefault(prefix, {})[rest] = value
        scorers = {name: _scorer_from_arrays(name, groups[name]) for name in header["scorers"]}
        return cls(scorers, TreeEnsembles(groups["trees"]), header["quantiles"], header["meta"])

    def __repr__(self) -> str:
        n = self.meta.get("n_train", "?")
        return f"LengthEstimator(model={self.model!r}, quantiles={self.quantiles}, n_train={n})"
