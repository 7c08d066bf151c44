"""Gradient-boosted trees (fitted by sklearn's HistGradientBoostingRegressor) evaluated with numpy.

sklearn's predict costs about 2 ms per call for one row (validation and thread start-up), more than the
whole budget of a prediction. The fitted trees are flattened into node arrays and traversed for all trees
of all models at once: one numpy step per tree level.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class TreeEnsembles:
    """K boosted models sharing one feature vector; predict(X) -> (n, K) raw model outputs."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays
        offsets = arrays["tree_offsets"].astype(np.int64)  # node start of each tree, plus the end
        self.tree_model = arrays["tree_model"].astype(np.int64)  # model index of each tree
        self.baselines = arrays["baselines"].astype(np.float64)
        self.n_models = len(self.baselines)
        # Flat node tables with global ids; a leaf points to itself, so every row can take the same
        # number of steps (the deepest tree's depth) without checking for leaves.
        base = np.repeat(offsets[:-1], np.diff(offsets))
        leaf = arrays["is_leaf"].astype(bool)
        own = np.arange(len(leaf))
        self._feature = arrays["feature"].astype(np.intp)
        self._threshold = arrays["threshold"].astype(np.float64)
        self._left = np.where(leaf, own, arrays["left"].astype(np.intp) + base)
        self._right = np.where(leaf, own, arrays["right"].astype(np.intp) + base)
        self._missing_left = arrays["missing_left"].astype(bool)
        self._value = arrays["value"].astype(np.float64)
        self._roots = offsets[:-1].astype(np.intp)
        self._depth = int(arrays["max_depth"][0])
        # Trees are stored model by model, so each model's trees are one contiguous run.
        self._model_starts = np.searchsorted(self.tree_model, np.arange(self.n_models))

    @classmethod
    def from_sklearn(cls, models: Sequence[object]) -> TreeEnsembles:
        parts: dict[str, list[np.ndarray]] = {
            k: [] for k in ("feature", "threshold", "left", "right", "is_leaf", "missing_left", "value")
        }
        offsets = [0]
        tree_model: list[int] = []
        baselines = []
        max_depth = 0
        for m_idx, model in enumerate(models):
            if getattr(model, "n_trees_per_iteration_", 1) != 1:
                raise ValueError("only single-output regressors are supported")
            baselines.append(float(np.ravel(model._baseline_prediction)[0]))
            for (predictor,) in model._predictors:
                nodes = predictor.nodes
                if nodes["is_categorical"].any():
                    raise ValueError("categorical splits are not supported")
                parts["feature"].append(nodes["feature_idx"].astype(np.int16))
                parts["threshold"].append(nodes["num_threshold"].astype(np.float64))
                parts["left"].append(nodes["left"].astype(np.int16))
                parts["right"].append(nodes["right"].astype(np.int16))
                parts["is_leaf"].append(nodes["is_leaf"].astype(bool))
                parts["missing_left"].append(nodes["missing_go_to_left"].astype(bool))
                # Leaf values already include the learning rate; internal values are unused.
                parts["value"].append(np.where(nodes["is_leaf"], nodes["value"], 0.0).astype(np.float32))
                max_depth = max(max_depth, int(nodes["depth"].max()))
                offsets.append(offsets[-1] + len(nodes))
                tree_model.append(m_idx)
        arrays = {k: np.concatenate(v) for k, v in parts.items()}
        arrays["tree_offsets"] = np.asarray(offsets, dtype=np.int64)
        arrays["tree_model"] = np.asarray(tree_model, dtype=np.int16)
        arrays["baselines"] = np.asarray(baselines, dtype=np.float64)
        arrays["max_depth"] = np.asarray([max_depth], dtype=np.int64)
        return cls(arrays)

    def predict(self, x: np.ndarray, model: int | None = None, chunk: int = 256) -> np.ndarray:
        """(n, n_models) outputs; or (n, 1), the trees of one `model` only (a fraction of the cost)."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        if model is None:
            roots, starts, base = self._roots, self._model_starts, self.baselines
        else:
            end = self._model_starts[model + 1] if model + 1 < self.n_models else len(self._roots)
            roots = self._roots[self._model_starts[model] : end]
            starts, base = np.zeros(1, dtype=np.intp), self.baselines[model : model + 1]
        out = np.empty((len(x), len(base)))
        for start in range(0, len(x), chunk):
            part = x[start : start + chunk]
            values = self._leaf_values(part, roots)
            out[start : start + chunk] = np.add.reduceat(values, starts, axis=1) + base[None, :]
        return out

    def _leaf_values(self, x: np.ndarray, roots: np.ndarray) -> np.ndarray:
        rows = np.arange(len(x))[:, None]
        node = np.broadcast_to(roots, (len(x), len(roots)))
        nan = np.isnan(x).any()
        for _ in range(self._depth):
            v = x[rows, self._feature[node]]
            go_left = v <= self._threshold[node]
            if nan:
                go_left = np.where(np.isnan(v), self._missing_left[node], go_left)
            node = np.where(go_left, self._left[node], self._right[node])
        return self._value[node]  # (n, trees)
