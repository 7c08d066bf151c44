"""A fine-tuned encoder as a text scorer: its weights run in the numpy encoder (block.length.minilm).

`block length train --model finetune` (block.length.finetune, which needs torch) trains a BERT-style encoder
end to end with a one-output head on its mean-pooled last layer. The result is exported here as plain
arrays (encoder weights, the head, the tokenizer file, the token window) inside the length model's .npz, so
serving it needs no torch: the router already has numpy, safetensors and tokenizers.

Only the first `layers` of the encoder are kept and only a short token window is read: the encoder's cost
grows with both, and the router's budget is a few milliseconds per prompt.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence

import numpy as np

from block.length.minilm import MiniLMEncoder
from block.length.text import PromptText

HEADS = ("score",)


class FinetunedScorer:
    """score_many(parsed prompts) -> (n, 1): the fine-tuned head's output (log1p length for the
    regression loss; a rank score for the ranking loss; the trees map either to lengths)."""

    heads = HEADS

    def __init__(
        self,
        weights: dict[str, np.ndarray],
        config: dict,
        tokenizer_json: str,
        head: dict[str, np.ndarray],
        head_tokens: int,
        tail_tokens: int,
    ) -> None:
        self.weights = weights
        self.config = dict(config)
        self.tokenizer_json = tokenizer_json
        self.head_w = np.asarray(head["w"], dtype=np.float32).reshape(-1)
        self.head_b = float(np.asarray(head["b"]).reshape(-1)[0])
        self.head_tokens, self.tail_tokens = int(head_tokens), int(tail_tokens)
        self._encoder: MiniLMEncoder | None = None
        self._lock = threading.Lock()

    @property
    def encoder(self) -> MiniLMEncoder:
        with self._lock:  # built once, on first use (a few hundred ms)
            if self._encoder is None:
                self._encoder = MiniLMEncoder.from_arrays(
                    self.weights,
                    self.config,
                    self.tokenizer_json,
                    self.head_tokens,
                    self.tail_tokens,
                    normalize=False,
                )
            return self._encoder

    def score_texts(self, prompts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        from threadpoolctl import threadpool_limits

        # One BLAS thread: on a busy 2-core host a second one spins against other work (a batch of 16
        # measured 50 ms of CPU per prompt with two threads, 11 ms with one).
        with threadpool_limits(limits=1, user_api="blas"):
            pooled = self.encoder.encode(prompts, batch_size=batch_size)
        return (pooled @ self.head_w + self.head_b).astype(np.float64)[:, None]

    def score_many(self, texts: Sequence[PromptText]) -> np.ndarray:
        return self.score_texts([t.prompt for t in texts])

    def to_arrays(self) -> dict[str, np.ndarray]:
        # float16 halves the file; the encoder computes in float32 (differences ~1e-3 in the score).
        meta = {"config": self.config, "head_tokens": self.head_tokens, "tail_tokens": self.tail_tokens}
        return {
            **{f"w.{k}": np.asarray(v, dtype=np.float16) for k, v in self.weights.items()},
            "head_w": self.head_w,
            "head_b": np.array([self.head_b]),
            "tokenizer": np.frombuffer(self.tokenizer_json.encode(), dtype=np.uint8),
            "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        }

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> FinetunedScorer:
        meta = json.loads(a["meta"].tobytes().decode())
        weights = {k[2:]: v for k, v in a.items() if k.startswith("w.")}
        head = {"w": a["head_w"], "b": a["head_b"]}
        tokenizer = a["tokenizer"].tobytes().decode()
        return cls(weights, meta["config"], tokenizer, head, meta["head_tokens"], meta["tail_tokens"])
