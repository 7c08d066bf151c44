"""Synthetic length distributions: fixed, uniform and Zipf."""

from __future__ import annotations

import numpy as np


def fixed_lengths(n: int, prompt: int, output: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full(n, prompt, dtype=np.int64), np.full(n, output, dtype=np.int64)


def uniform_lengths(
    n: int, prompt_range: tuple[int, int], output_range: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Lengths uniform over the inclusive ranges."""
    prompts = rng.integers(prompt_range[0], prompt_range[1] + 1, size=n)
    outputs = rng.integers(output_range[0], output_range[1] + 1, size=n)
    return prompts, outputs


def zipf_draw(n: int, alpha: float, low: int, high: int, rng: np.random.Generator) -> np.ndarray:
    """Lengths k in [low, high] with P(k) proportional to (k - low + 1) ** -alpha (a bounded Zipf law)."""
    ranks = np.arange(1, high - low + 2, dtype=np.float64)
    weights = ranks**-alpha
    return rng.choice(np.arange(low, high + 1), size=n, p=weights / weights.sum())


def zipf_lengths(
    n: int, alpha: float, max_prompt: int, max_output: int, min_prompt: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    return zipf_draw(n, alpha, min_prompt, max_prompt, rng), zipf_draw(n, alpha, 1, max_output, rng)
