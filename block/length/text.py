"""How a prompt is cut and tokenised for the length models.

Only a bounded window of the prompt is read (its head and its tail), so the cost of a prediction does not
grow with the prompt: the instruction that decides the answer's length sits at the start or at the end of a
prompt, rarely in the middle of a pasted document. The prompt's full size still enters as a feature.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

HEAD_CHARS = 1000
TAIL_CHARS = 300
CHAR_WINDOW = 300  # character n-grams are costlier per character, so they read less

_WORD = re.compile(r"\w+|[^\w\s]")
_SPACE = re.compile(r"\s+")


def window(prompt: str, head: int = HEAD_CHARS, tail: int = TAIL_CHARS) -> str:
    """The head and the tail of `prompt`, or all of it when it is short."""
    if len(prompt) <= head + tail:
        return prompt
    return prompt[:head] + "\n" + prompt[-tail:]


def words(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens."""
    return _WORD.findall(text.lower())


def word_terms(tokens: list[str]) -> list[str]:
    """Unigrams and bigrams of a token list."""
    return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:], strict=False)]


CHAR_NGRAMS = (2, 3, 4)


def char_text(text: str, window_chars: int = CHAR_WINDOW) -> str:
    """The start of `text`, lower-cased, whitespace collapsed, padded with spaces."""
    return " " + _SPACE.sub(" ", text[:window_chars].lower()) + " "


def char_terms(text: str, window_chars: int = CHAR_WINDOW) -> list[str]:
    """Character 2-4-grams of char_text(text)."""
    s = char_text(text, window_chars)
    return [s[i : i + n] for n in CHAR_NGRAMS for i in range(len(s) - n + 1)]


_P = np.uint64(1_000_003)


def char_hashes(s: str) -> np.ndarray:
    """64-bit hashes of the 2-4-grams of an already prepared string, vectorised (the fast path of
    char_terms: the same n-grams, as numbers; a collision needs two n-grams with equal hashes)."""
    codes = np.frombuffer(s.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
    out = []
    with np.errstate(over="ignore"):  # wrap-around multiplication is the hash
        h = codes.copy()
        for n in range(2, max(CHAR_NGRAMS) + 1):
            if len(codes) < n:
                break
            h = h[:-1] * _P + codes[n - 1 :]
            if n in CHAR_NGRAMS:
                out.append(h + np.uint64(n) * np.uint64(0x9E3779B97F4A7C15))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.uint64)


def term_hash(term: str) -> int:
    """char_hashes of one n-gram (used to index the vocabulary)."""
    return int(char_hashes(term)[-1]) if len(term) >= 2 else 0


def analyze_words(text: str) -> list[str]:
    """Analyzer used to fit the word TF-IDF (the same function the fast scorer uses)."""
    return word_terms(words(text))


def analyze_chars(text: str) -> list[str]:
    return char_terms(text)


@dataclass(frozen=True, slots=True)
class PromptText:
    """A prompt parsed once for all models: its window, word tokens and word-term counts."""

    prompt: str
    window: str
    tokens: list[str]
    word_counts: Counter[str]


def parse(prompt: str) -> PromptText:
    w = window(prompt)
    tokens = words(w)
    return PromptText(prompt, w, tokens, Counter(word_terms(tokens)))
