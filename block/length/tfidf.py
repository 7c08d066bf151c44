"""TF-IDF (word and character n-grams) with several ridge heads, and its fast scorer.

Heads (all linear in the same TF-IDF vector, so one pass over a prompt's terms scores them all):
- `log`: ridge regression on log1p(length), word and character terms (the issue's baseline model);
- `word`, `char`: the same on one block only (ensembling views that err differently);
- `gt30` ... `gt800`: ridge on the indicator "length > T" (a linear probability model per threshold),
  which tells the trees about the shape of the length distribution, not only its centre.

sklearn fits it; prediction does not call sklearn, whose per-call overhead (input validation, sparse matrix
assembly) is several hundred microseconds. The model is a term table (term -> row) and a coefficient
matrix; scoring is a dict pass over the prompt's terms and one small matrix product.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from itertools import repeat

import numpy as np

from block.length.text import (
    PromptText,
    analyze_chars,
    analyze_words,
    char_hashes,
    char_text,
    term_hash,
)

RIDGE_ALPHA = 3.0
MAX_WORD_TERMS = 40_000
MAX_CHAR_TERMS = 20_000
THRESHOLDS = (30, 100, 200, 400, 800)
HEADS = ("log", "word", "char") + tuple(f"gt{t}" for t in THRESHOLDS)


class _Block:
    """One l2-normalised, sublinear-tf TF-IDF block (exactly sklearn's TfidfVectorizer output)."""

    def __init__(self, terms: list[str], idf: np.ndarray, offset: int, analyzer: Callable[[str], list[str]]):
        self.terms = terms
        self.idf = np.asarray(idf, dtype=np.float32)
        self.analyzer = analyzer
        self.offset = offset
        self._index = {t: i for i, t in enumerate(terms)}
        self._idf64 = self.idf.astype(np.float64)

    def weights(self, counts: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
        """(global term rows, normalised weights) of the known terms among `counts` (term -> tf)."""
        if not counts:
            return _EMPTY_I, _EMPTY_F
        # map(dict.get, keys, defaults) runs in C: no Python-level loop over the terms.
        idx = np.fromiter(map(self._index.get, counts.keys(), repeat(-1, len(counts))), np.int64, len(counts))
        tf = np.fromiter(counts.values(), np.float64, len(counts))
        known = idx >= 0
        idx = idx[known]
        w = (1.0 + np.log(tf[known])) * self._idf64[idx]
        norm = math.sqrt(float(w @ w))
        return idx + self.offset, (w / norm if norm > 0.0 else w)


class _CharBlock(_Block):
    """The character block, matched by n-gram hashes with numpy instead of strings in Python: building
    ~900 n-gram strings of a 300-character window costs more than all the rest of a prediction."""

    def __init__(self, terms: list[str], idf: np.ndarray, offset: int) -> None:
        super().__init__(terms, idf, offset, analyze_chars)
        hashes = np.fromiter((term_hash(t) for t in terms), dtype=np.uint64, count=len(terms))
        self._order = np.argsort(hashes, kind="stable")
        self._sorted = hashes[self._order]

    def weights(self, text: str) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[override]
        """As _Block.weights, from the window text itself."""
        if not len(self._sorted):
            return _EMPTY_I, _EMPTY_F
        grams, tf = np.unique(char_hashes(char_text(text)), return_counts=True)
        pos = np.minimum(np.searchsorted(self._sorted, grams), len(self._sorted) - 1)
        known = self._sorted[pos] == grams
        idx = self._order[pos[known]]
        w = (1.0 + np.log(tf[known])) * self._idf64[idx]
        norm = math.sqrt(float(w @ w))
        return idx + self.offset, (w / norm if norm > 0.0 else w)


_EMPTY_I = np.zeros(0, dtype=np.int64)
_EMPTY_F = np.zeros(0, dtype=np.float64)


class TfidfHeads:
    """score_many(parsed prompts) -> (n, len(HEADS)) head outputs; `log` estimates log1p(length)."""

    heads = HEADS

    def __init__(
        self,
        word_terms: list[str],
        word_idf: np.ndarray,
        char_terms: list[str],
        char_idf: np.ndarray,
        coef: np.ndarray,
        intercept: np.ndarray,
    ) -> None:
        self.words = _Block(word_terms, word_idf, 0, analyze_words)
        self.chars = _CharBlock(char_terms, char_idf, len(word_terms))
        self.coef = np.asarray(coef, dtype=np.float64)  # (word terms + char terms, heads)
        self.intercept = np.asarray(intercept, dtype=np.float64)
        if self.coef.shape != (len(word_terms) + len(char_terms), len(self.intercept)):
            raise ValueError("coefficient matrix does not match the vocabulary")

    def score(self, text: PromptText) -> np.ndarray:
        wi, ww = self.words.weights(text.word_counts)
        ci, cw = self.chars.weights(text.window)
        return self.intercept + ww @ self.coef[wi] + cw @ self.coef[ci]

    def score_many(self, texts: Sequence[PromptText]) -> np.ndarray:
        out = np.empty((len(texts), len(self.intercept)))
        for i, t in enumerate(texts):
            out[i] = self.score(t)
        return out

    # --- fitting -------------------------------------------------------------------------------------

    @classmethod
    def fit_with_oof(
        cls,
        texts: Sequence[str],
        log_y: np.ndarray,
        folds: int,
        seed: int,
        tick: Callable[[str], None] = lambda _d: None,
    ) -> tuple[TfidfHeads, np.ndarray]:
        """The model fitted on all `texts`, and out-of-fold head outputs for each text.

        The trees stacked on the heads learn from out-of-fold outputs, since in use they see outputs for
        unseen prompts, not for memorised ones. The vocabulary and idf are fitted once on all texts (they
        use no labels); only the ridge heads are refitted per fold.
        """
        from scipy.sparse import hstack
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.model_selection import KFold

        word = TfidfVectorizer(
            analyzer=analyze_words, min_df=2, max_features=MAX_WORD_TERMS, sublinear_tf=True
        )
        char = TfidfVectorizer(
            analyzer=analyze_chars, min_df=3, max_features=MAX_CHAR_TERMS, sublinear_tf=True
        )
        xw = word.fit_transform(texts).tocsr()
        xc = char.fit_transform(texts).tocsr()
        x = hstack([xw, xc]).tocsr()
        nw = xw.shape[1]
        y = np.column_stack([log_y] + [(log_y > math.log1p(t)).astype(np.float64) for t in THRESHOLDS])
        tick("text model: ridge heads")

        oof = np.zeros((len(texts), len(HEADS)))
        for fit_idx, score_idx in KFold(folds, shuffle=True, random_state=seed).split(log_y):
            coef, icpt = _fit_heads(x[fit_idx], xw[fit_idx], xc[fit_idx], y[fit_idx], nw)
            oof[score_idx] = x[score_idx] @ coef + icpt
            tick("text model: ridge heads")
        coef, icpt = _fit_heads(x, xw, xc, y, nw)
        model = cls(
            word.get_feature_names_out().tolist(),
            word.idf_,
            char.get_feature_names_out().tolist(),
            char.idf_,
            coef,
            icpt,
        )
        return model, oof

    # --- storage -------------------------------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "word_terms": _pack_terms(self.words.terms),
            "word_idf": self.words.idf,
            "char_terms": _pack_terms(self.chars.terms),
            "char_idf": self.chars.idf,
            # float16 halves the file; the heads feed trees, and 3 significant digits change no split.
            "coef": self.coef.astype(np.float16),
            "intercept": self.intercept,
        }

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> TfidfHeads:
        return cls(
            _unpack_terms(a["word_terms"]),
            a["word_idf"],
            _unpack_terms(a["char_terms"]),
            a["char_idf"],
            a["coef"].astype(np.float32),
            a["intercept"],
        )


def _fit_heads(x, xw, xc, y: np.ndarray, nw: int) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients (terms, heads) and intercepts of all heads on one training set."""
    from sklearn.linear_model import Ridge

    def ridge(m, target):
        # sparse_cg: several times faster than the auto choice on these multi-target sparse problems.
        return Ridge(alpha=RIDGE_ALPHA, solver="sparse_cg").fit(m, target)

    full = ridge(x, y)  # log head and the threshold heads
    w = ridge(xw, y[:, 0])
    c = ridge(xc, y[:, 0])
    coef = np.zeros((x.shape[1], len(HEADS)))
    icpt = np.zeros(len(HEADS))
    coef[:, 0], icpt[0] = full.coef_[0], full.intercept_[0]
    coef[:nw, 1], icpt[1] = w.coef_, w.intercept_
    coef[nw:, 2], icpt[2] = c.coef_, c.intercept_
    coef[:, 3:] = full.coef_[1:].T
    icpt[3:] = full.intercept_[1:]
    return coef, icpt


def _pack_terms(terms: list[str]) -> np.ndarray:
    # Terms never contain "\n" (whitespace is collapsed to one space), so it can separate them.
    return np.frombuffer("\n".join(terms).encode("utf-8"), dtype=np.uint8)


def _unpack_terms(packed: np.ndarray) -> list[str]:
    text = packed.tobytes().decode("utf-8")
    return text.split("\n") if text else []
