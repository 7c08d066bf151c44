"""Features of a prompt's form and intent: how long it is, what it asks for, in which language.

TF-IDF sees words; these name what decides an answer's length directly (a request for code, a list or an
essay, a translation or a summary of pasted text, "briefly", "500 words", a role-play setup answered by
"OK"). A tree model combines them with the TF-IDF score, so interactions such as "long prompt + summarise"
(short answer) versus "long prompt + rewrite" (answer as long as the prompt) can be learnt.
Everything here is a regex pass or one loop over the window's tokens: tens of microseconds.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping

import numpy as np

from block.length.text import word_terms

HEAD_TOKENS = 48  # where the instruction usually is


def _terms(words: str, *phrases: str) -> frozenset[str]:
    """Space-separated single words, plus multi-word phrases (matched as bigrams)."""
    return frozenset(words.split()) | frozenset(phrases)


# Intent groups: a unigram or bigram in the set marks the group.
GROUPS: dict[str, frozenset[str]] = {
    "code": _terms(
        "code function script program python javascript java c++ sql html css react implement class api "
        "regex bash typescript golang rust php kotlin swift node django flask query algorithm",
        "c #",
        "unit test",
    ),
    "write": _terms("write compose draft create generate make design build develop"),
    "explain": _terms("explain describe why how elaborate discuss detail details detailed"),
    "list": _terms("list ideas examples steps tips ways suggestions outline bullet points names options top"),
    "longform": _terms(
        "essay article blog story report paper post poem letter email speech chapter content copy "
        "plan proposal lesson course script novel description"
    ),
    "short": _terms(
        "short brief briefly concise shorter summarize tldr one-word",
        *("one sentence", "one word", "yes or", "only answer", "just answer", "in short"),
    ),
    "long": _terms(
        "long detailed comprehensive complete full thorough extensive longer",
        "in depth",
        "at least",
        "step by",
    ),
    "translate": _terms("translate translation translated english chinese spanish french"),
    "rewrite": _terms("rewrite rephrase paraphrase correct proofread fix improve edit grammar refactor"),
    "summary": _terms("summary summarize summarise summarization tl takeaways", "key points"),
    "roleplay": _terms("roleplay", "act as", "you are", "pretend to", "i want", "want you", "role play"),
    "ack": _terms(
        "acknowledge",
        *("reply with", "respond with", "just say", "say ok", "reply ok", "understand ?"),
        *("wait for", "i will", "next message", "read it"),
    ),
    "continue": _terms("continue more go", "go on", "keep going"),
    "format": _terms("table chart csv json markdown yaml xml format"),
    "question": _terms("what who when where which whether is are can does do could should would"),
}
_UNITS = _terms(
    "words word paragraphs paragraph sentences sentence items steps examples ideas points lines pages "
    "questions tips ways names"
)
_NAMES = list(GROUPS)
_GROUP_OF: dict[str, list[int]] = {}
for _i, _name in enumerate(_NAMES):
    for _term in GROUPS[_name]:
        _GROUP_OF.setdefault(_term, []).append(_i)
_ALL_TERMS = frozenset(_GROUP_OF)

_CODE_CHARS = re.compile(r"[{};=<>\[\]()]")
_DIGITS = re.compile(r"\d")
_UPPER = re.compile(r"[A-Z]")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
_QUESTION_START = re.compile(r"^\W*(what|who|when|where|which|why|how|is|are|can|does|do)\b", re.I)

BASE_FEATURES = [
    "log_prompt_tokens",
    "log_chars",
    "log_lines",
    "tokens_per_char",
    "question_marks",
    "ends_with_question",
    "starts_with_question",
    "code_fence",
    "code_char_frac",
    "digit_frac",
    "upper_frac",
    "non_ascii_frac",
    "cjk_frac",
    "cyrillic_frac",
    "log_requested_count",
    "requested_words",
]
FEATURE_NAMES = BASE_FEATURES + [f"{n}_head" for n in _NAMES] + [f"{n}_count" for n in _NAMES]


def intent_features(
    prompt: str,
    window_text: str,
    tokens: list[str],
    prompt_tokens: int,
    counts: Mapping[str, int] | None = None,
) -> list[float]:
    """The feature vector (FEATURE_NAMES order) of one prompt.

    `tokens` are the window's word tokens; `counts` their unigram and bigram counts (word_terms), when
    the caller has them already (prediction shares them with the TF-IDF scorer)."""
    if counts is None:
        counts = Counter(word_terms(tokens))
    n = max(len(window_text), 1)
    chars = len(prompt)
    ascii_only = window_text.isascii()
    f = [
        math.log1p(prompt_tokens),
        math.log1p(chars),
        math.log1p(prompt.count("\n")),
        prompt_tokens / max(chars, 1),  # high for code, CJK and other dense scripts
        float(min(prompt.count("?"), 10)),
        float(prompt.rstrip().endswith("?")),
        float(bool(_QUESTION_START.match(prompt))),
        float("```" in prompt),
        len(_CODE_CHARS.findall(window_text)) / n,
        len(_DIGITS.findall(window_text)) / n,
        len(_UPPER.findall(window_text)) / n,
        0.0 if ascii_only else (n - len(window_text.encode("ascii", "ignore"))) / n,
        0.0 if ascii_only else len(_CJK.findall(window_text)) / n,
        0.0 if ascii_only else len(_CYRILLIC.findall(window_text)) / n,
    ]
    head = [0.0] * len(_NAMES)
    count = [0.0] * len(_NAMES)
    # Set intersections run in C; only the few matching terms are visited in Python.
    for term in _ALL_TERMS.intersection(counts):
        for g in _GROUP_OF[term]:
            count[g] += counts[term]
    for term in _ALL_TERMS.intersection(word_terms(tokens[:HEAD_TOKENS])):
        for g in _GROUP_OF[term]:
            head[g] = 1.0
    # "500 words", "10 ideas": an explicit size is the strongest length hint there is.
    requested = 0
    requested_words = 0.0
    if _UNITS.intersection(counts):
        for prev, tok in zip(tokens, tokens[1:], strict=False):
            if tok in _UNITS and prev.isdecimal():
                requested = min(int(prev[:6]), 100_000)
                requested_words = float(tok.startswith("word"))
                break
    f.append(math.log1p(requested))
    f.append(requested_words)
    f.extend(head)
    f.extend(min(c, 20.0) for c in count)
    return f


def intent_matrix(rows: list[list[float]]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(FEATURE_NAMES))
