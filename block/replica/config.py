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

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReplicaConfig:
        fields = cls.__dataclass_fields__
        return cls(**{k: int(v) for k, v in d.items() if k in fields})
