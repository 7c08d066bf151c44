"""Fitting a LengthEstimator from labelled samples (deterministic for a seed)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from block.length.estimator import QUANTILES, LengthEstimator
from block.length.intent import intent_features
from block.length.text import window, words
from block.length.tfidf import TfidfHeads
from block.length.trees import TreeEnsembles
from block.workload import Sample

MODELS = ("tfidf",)
PLANNED_MODELS = ("minilm",)  # accepted by the CLI surface, not built yet
OOF_FOLDS = 5
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


def training_steps(model: str = "tfidf", quantiles: Sequence[float] = QUANTILES) -> int:
    """How many times `fit_estimator` calls `progress` (for a progress bar's total)."""
    return 3 + OOF_FOLDS + len(quantiles)


def fit_estimator(
    train: Sequence[Sample],
    model: str = "tfidf",
    seed: int = 0,
    quantiles: Sequence[float] = QUANTILES,
    tokenizer: str = "llama3",
    progress: Progress | None = None,
    meta: dict | None = None,
    tree_iters: int = TREE_PARAMS["max_iter"],
) -> LengthEstimator:
    """Fit on `train` only (the caller keeps the held-out split away from here).

    `tree_iters` (boosting rounds per quantile) only needs lowering for quick fits in tests."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    if model in PLANNED_MODELS:
        raise ValueError(f"the {model} length model is not available yet; use tfidf")
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
    tick("text model: TF-IDF")

    tfidf, oof = TfidfHeads.fit_with_oof(windows, log_y, OOF_FOLDS, seed, tick)
    scorers: dict = {"tfidf": tfidf}
    scores = [oof]
    tick("quantile trees")

    from threadpoolctl import threadpool_limits

    x = np.column_stack([*scores, intent])
    fitted = []
    # One OpenMP thread: these fits are small, and on a busy 2-core machine spinning OpenMP workers
    # made each fit 10x slower than single-threaded.
    with threadpool_limits(limits=1, user_api="openmp"):
        for q in quantiles:
            params = {**TREE_PARAMS, "max_iter": tree_iters}
            reg = HistGradientBoostingRegressor(loss="quantile", quantile=q, random_state=seed, **params)
            fitted.append(reg.fit(x, log_y))
            tick("quantile trees")
    info = {
        "model": model,
        "seed": seed,
        "tokenizer": tokenizer,
        "n_train": len(train),
        "train_median": float(np.median(np.expm1(log_y))),
    }
    info.update(meta or {})
    return LengthEstimator(scorers, TreeEnsembles.from_sklearn(fitted), quantiles, info)
