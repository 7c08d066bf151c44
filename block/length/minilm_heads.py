"""Ridge and MLP heads on MiniLM sentence embeddings: a text scorer for the length model's trees.

The heads mirror the TF-IDF ones (block.length.tfidf): `log` regresses log1p(length), `gt30` ... `gt800`
are linear probability models of "length > T"; `mlp` regresses log1p(length) with one hidden ReLU layer
(on ShareGPT its out-of-fold log-MAE is 0.632 against the ridge head's 0.677, Spearman 0.43 against 0.37).
The embedding is computed once per prompt and shared by all heads. The 90 MB encoder is loaded once per
process, on first use, and shared by every estimator.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence

import numpy as np

from block.length.minilm import DIM, MiniLMEncoder
from block.length.text import PromptText
from block.length.tfidf import THRESHOLDS

RIDGE_ALPHA = 1.0  # out-of-fold log-MAE of the log head on ShareGPT: 0.677 (0.675 at 3 or 10, 0.680 at 0.1)
MLP_HIDDEN = 256
MLP_ALPHA = 1e-2
HEADS = ("log", "mlp") + tuple(f"gt{t}" for t in THRESHOLDS)

_lock = threading.Lock()
_encoder: MiniLMEncoder | None = None


def shared_encoder() -> MiniLMEncoder:
    global _encoder
    with _lock:
        if _encoder is None:
            _encoder = MiniLMEncoder()
        return _encoder


class MiniLMHeads:
    """score_many(parsed prompts) -> (n, len(HEADS)) head outputs; `log` estimates log1p(length)."""

    heads = HEADS

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, mlp: dict[str, np.ndarray]) -> None:
        self.coef = np.asarray(coef, dtype=np.float32)  # (DIM, linear heads): all heads but `mlp`
        self.intercept = np.asarray(intercept, dtype=np.float64)
        if self.coef.shape != (DIM, len(self.intercept)) or len(self.intercept) != len(HEADS) - 1:
            raise ValueError("coefficient matrix does not match the embedding size")
        self.mlp = {k: np.asarray(v, dtype=np.float32) for k, v in mlp.items()}  # w1, b1, w2, b2
        # Optional: embeddings of whole prompt lists looked up in the on-disk cache (evaluation runs).
        self.embed: Callable[[Sequence[str]], np.ndarray] | None = None

    def score_many(self, texts: Sequence[PromptText]) -> np.ndarray:
        prompts = [t.prompt for t in texts]
        emb = self.embed(prompts) if self.embed is not None else shared_encoder().encode(prompts)
        return self.scores(emb)

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        linear = embeddings.astype(np.float64) @ self.coef + self.intercept
        return np.column_stack([linear[:, :1], _mlp_forward(self.mlp, embeddings), linear[:, 1:]])

    @classmethod
    def fit_with_oof(
        cls,
        embeddings: np.ndarray,
        log_y: np.ndarray,
        folds: int,
        seed: int,
        tick: Callable[[str], None] = lambda _d: None,
    ) -> tuple[MiniLMHeads, np.ndarray]:
        """The heads fitted on all embeddings, and out-of-fold head outputs (the trees learn from those,
        as they see outputs for unseen prompts in use)."""
        from sklearn.model_selection import KFold
        from threadpoolctl import threadpool_limits

        x = np.asarray(embeddings, dtype=np.float64)
        y = np.column_stack([log_y] + [(log_y > math.log1p(t)).astype(np.float64) for t in THRESHOLDS])
        oof = np.zeros((len(x), len(HEADS)))
        # One BLAS thread: small matrices, and a busy 2-core machine (see block.length.train).
        with threadpool_limits(limits=1, user_api="blas"):
            for fit_idx, score_idx in KFold(folds, shuffle=True, random_state=seed).split(x):
                fold = cls(*_ridge(x[fit_idx], y[fit_idx]), _fit_mlp(x[fit_idx], log_y[fit_idx], seed))
                oof[score_idx] = fold.scores(x[score_idx])
            model = cls(*_ridge(x, y), _fit_mlp(x, log_y, seed))
        tick("embedding model: heads")
        return model, oof

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "coef": self.coef,
            "intercept": self.intercept,
            **{f"mlp_{k}": v for k, v in self.mlp.items()},
        }

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> MiniLMHeads:
        return cls(a["coef"], a["intercept"], {k[4:]: v for k, v in a.items() if k.startswith("mlp_")})


def _ridge(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ridge coefficients (DIM, heads) and intercepts, solved in closed form (384 dimensions: instant)."""
    mx, my = x.mean(axis=0), y.mean(axis=0)
    xc = x - mx
    coef = np.linalg.solve(xc.T @ xc + RIDGE_ALPHA * np.eye(x.shape[1]), xc.T @ (y - my))
    return coef, my - mx @ coef


def _fit_mlp(x: np.ndarray, log_y: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """One-hidden-layer ReLU regressor of log1p(length) (sklearn fits it; numpy evaluates it)."""
    from sklearn.neural_network import MLPRegressor

    m = MLPRegressor(
        hidden_layer_sizes=(MLP_HIDDEN,),
        alpha=MLP_ALPHA,
        early_stopping=True,
        random_state=seed,
        max_iter=200,
    ).fit(x, log_y)
    return {"w1": m.coefs_[0], "b1": m.intercepts_[0], "w2": m.coefs_[1][:, 0], "b2": m.intercepts_[1]}


def _mlp_forward(mlp: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    hidden = np.maximum(np.asarray(x, dtype=np.float32) @ mlp["w1"] + mlp["b1"], 0.0)
    return (hidden @ mlp["w2"] + mlp["b2"]).astype(np.float64)
