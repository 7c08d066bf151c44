"""The knobs of a vLLM-style instance that shape its batching."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    max_num_seqs: int = 48  # sequences in one step at most
    max_num_batched_tokens: int = 512  # token budget of one step (chunked prefill)
    block_size: int = 16  # tokens per KV-cache block
    num_gpu_blocks: int = 1052  # KV-cache blocks in all
    max_model_len: int = 4096  # prompt + output tokens of one request at most
    # vLLM V1's automatic prefix caching (on by default there); the paper's setting, vLLM 0.7.2, had it off
    enable_prefix_caching: bool = True

    def __post_init__(self) -> None:
        for name in (
            "max_num_seqs",
            "max_num_batched_tokens",
            "block_size",
            "num_gpu_blocks",
            "max_model_len",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")

    @property
    def room(self) -> int:
        """Tokens one request can hold at most: the model's length, and all of the KV cache."""
        return min(self.max_model_len, self.num_gpu_blocks * self.block_size)

    def fits(self, prompt_tokens: int) -> bool:
        """Whether a prompt this long can be served here (it leaves room for a token of output)."""
        return 1 <= prompt_tokens < self.room

    def to_dict(self) -> dict[str, int | bool]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReplicaConfig:
        fields = cls.__dataclass_fields__
        return cls(**{k: _flag(v) if k in _FLAGS else int(v) for k, v in d.items() if k in fields})


_FLAGS = frozenset({"enable_prefix_caching"})


def _flag(v: Any) -> bool:
    if isinstance(v, str):
        if v.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if v.strip().lower() in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"not a boolean: {v!r}")
    return bool(v)
