"""Fitting a LengthEstimator from labelled samples (deterministic for a seed)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from block.length.calibrate import calibration_mask, conformal_offsets
from block.length.estimator import QUANTILES, LengthEstimator
from block.length.intent import intent_features
from block.length.text import parse, window, words
from block.length.tfidf import TfidfHeads
from block.length.trees import TreeEnsembles
from block.workload import Sample

# Text scorers feeding the trees: TF-IDF heads, MiniLM-embedding heads, or both (stacked by the trees).
MODELS = ("tfidf", "minilm", "tfidf+minilm")
OOF_FOLDS = 5
MIN_CALIBRATION = 50  # fewer calibration samples than this: offsets too noisy to be worth applying
CALIBRATION_MIN_TRAIN = 4 * OOF_FOLDS
TREE_PARAMS = {
    "max_iter": 200,
    "learning_rate": 0.06,
    "max_leaf_nodes": 31,
    "max_depth": 8,
    "min_samples_leaf": 20,
    "l2_regularization": 1.0,
    "early_stopping": False,  # use all the training data, same trees every run
}

Progress = Callable[[str], None]  # called once per finished step with the next step's description
EmbedProgress = Callable[[int, int], None]  # (prompts embedded so far, total)


def training_steps(
    model: str = "tfidf", quantiles: Sequence[float] = QUANTILES, calibrate: bool = True
) -> int:
    """How many times `fit_estimator` calls `progress` (for a progress bar's total)."""
    parts = model.split("+")
    text = (2 + OOF_FOLDS if "tfidf" in parts else 0) + (1 if "minilm" in parts else 0)
    passes = 2 if calibrate else 1  # the calibration pipeline, then the final one
    return ("minilm" in parts) + passes * (text + 1 + len(quantiles))


def fit_estimator(
    train: Sequence[Sample],
    model: str = "tfidf",
    seed: int = 0,
    quantiles: Sequence[float] = QUANTILES,
    tokenizer: str = "llama3",
    progress: Progress | None = None,
    meta: dict | None = None,
    tree_iters: int = TREE_PARAMS["max_iter"],
    calibrate: bool = True,
    embed_progress: EmbedProgress | None = None,
) -> LengthEstimator:
    """Fit on `train` only (the caller keeps the held-out split away from here).

    With `calibrate`, the quantile levels get conformal offsets (block.length.calibrate): the whole
    pipeline, text models and trees, is first fitted without a calibration slice of `train`, exactly as the
    final model is fitted without the held-out split, and the offsets are measured on that slice.
    `tree_iters` (boosting rounds per quantile) only needs lowering for quick fits in tests. MiniLM
    embeddings of `train` are computed once and cached on disk (block.length.embed_cache)."""
    if model not in MODELS:
        raise ValueError(f"unknown length model {model!r}; choose one of {', '.join(MODELS)}")
    if len(train) < 4 * OOF_FOLDS:
        raise ValueError(f"too few training samples ({len(train)}); need at least {4 * OOF_FOLDS}")
    tick = progress or (lambda _desc: None)
    prompts = [s.prompt for s in train]
    windows = [window(p) for p in prompts]
    log_y = np.log1p(np.array([s.output_tokens for s in train], dtype=np.float64))
    intent = np.asarray(
        [
            intent_features(p, w, words(w), s.prompt_tokens)
            for p, w, s in zip(prompts, windows, train, strict=True)
        ]
    )
    data = _Data(prompts, windows, log_y, intent, None)
    if "minilm" in model.split("+"):
        tick("embedding prompts (MiniLM)")
        data.embeddings = _embed(prompts, embed_progress)
    fit = _Fitter(model, seed, quantiles, tree_iters, tick)

    offsets = np.zeros(len(quantiles))
    if calibrate:
        cal = calibration_mask(prompts, seed)
        if cal.sum() >= MIN_CALIBRATION and (~cal).sum() >= CALIBRATION_MIN_TRAIN:
            scorers, trees = fit(data.rows(~cal))
            offsets = conformal_offsets(
                trees.predict(_features(scorers, data.rows(cal))), log_y[cal], quantiles
            )
        else:
            for _ in range(training_steps(model, quantiles, calibrate=False) - ("minilm" in model)):
                tick("calibration skipped: too few samples")
    scorers, trees = fit(data)
    info = {
        "model": model,
        "seed": seed,
        "tokenizer": tokenizer,
        "n_train": len(train),
        "train_median": float(np.median(np.expm1(log_y))),
        "calibration": [float(c) for c in offsets],
    }
    info.update(meta or {})
    return LengthEstimator(scorers, trees, quantiles, info)


@dataclass
class _Data:
    """Training rows: prompts, their windows, log1p lengths, intent features, MiniLM embeddings."""

    prompts: list[str]
    windows: list[str]
    log_y: np.ndarray
    intent: np.ndarray
    embeddings: np.ndarray | None

    def rows(self, mask: np.ndarray) -> _Data:
        idx = np.flatnonzero(mask)
        return _Data(
            [self.prompts[i] for i in idx],
            [self.windows[i] for i in idx],
            self.log_y[idx],
            self.intent[idx],
            None if self.embeddings is None else self.embeddings[idx],
        )


@dataclass
class _Fitter:
    """Fits the text scorers (out-of-fold scores for the trees) and one quantile tree model per level."""

    model: str
    seed: int
    quantiles: Sequence[float]
    tree_iters: int
    tick: Progress

    def __call__(self, d: _Data) -> tuple[dict, TreeEnsembles]:
        parts = self.model.split("+")
        scorers: dict = {}
        scores = []
        if "tfidf" in parts:
            self.tick("text model: TF-IDF")
            tfidf, oof = TfidfHeads.fit_with_oof(d.windows, d.log_y, OOF_FOLDS, self.seed, self.tick)
            scorers["tfidf"] = tfidf
            scores.append(oof)
        if "minilm" in parts:
            from block.length.minilm_heads import MiniLMHeads

            self.tick("embedding model: ridge heads")
            scorers["minilm"], oof = MiniLMHeads.fit_with_oof(d.embeddings, d.log_y, OOF_FOLDS, self.seed)
            scores.append(oof)
        self.tick("quantile trees")
        x = np.column_stack([*scores, d.intent])
        return scorers, TreeEnsembles.from_sklearn(self._trees(x, d.log_y))

    def _trees(self, x: np.ndarray, log_y: np.ndarray) -> list:
        return fit_quantile_trees(x, log_y, self.quantiles, self.seed, self.tree_iters, self.tick)


def fit_quantile_trees(
    x: np.ndarray,
    log_y: np.ndarray,
    quantiles: Sequence[float],
    seed: int,
    tree_iters: int | None = None,
    tick: Progress = lambda _d: None,
) -> list:
    """One sklearn quantile model of log1p(length) per level (TreeEnsembles.from_sklearn takes them)."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from threadpoolctl import threadpool_limits

    fitted = []
    # One OpenMP thread: these fits are small, and on a busy 2-core machine spinning OpenMP workers
    # made each fit 10x slower than single-threaded.
    with threadpool_limits(limits=1, user_api="openmp"):
        for q in quantiles:
            params = {**TREE_PARAMS, "max_iter": tree_iters or TREE_PARAMS["max_iter"]}
            reg = HistGradientBoostingRegressor(loss="quantile", quantile=q, random_state=seed, **params)
            fitted.append(reg.fit(x, log_y))
            tick("quantile trees")
    return fitted


def _features(scorers: dict, d: _Data) -> np.ndarray:
    """Tree inputs of rows the scorers never saw, as LengthEstimator.features computes them."""
    scores = []
    for name, scorer in scorers.items():
        if name == "minilm":
            scores.append(scorer.scores(d.embeddings))  # the cached embeddings, not a second encoder run
        else:
            scores.append(scorer.score_many([parse(p) for p in d.prompts]))
    return np.column_stack([*scores, d.intent])


def _embed(prompts: list[str], embed_progress: EmbedProgress | None) -> np.ndarray:
    from threadpoolctl import threadpool_limits

    from block.length.embed_cache import cached_embeddings
    from block.length.minilm_heads import shared_encoder

    # One BLAS thread: on a busy 2-core machine, OpenBLAS threads spinning against other work made the
    # encoder many times slower; alone, two threads gain little on these small matrices.
    with threadpool_limits(limits=1, user_api="blas"):
        return cached_embeddings(shared_encoder(), prompts, embed_progress)
