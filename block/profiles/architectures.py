"""The model shapes that step-time profiles need: layers, heads, widths, vocabulary, weight count."""

from __future__ import annotations

from dataclasses import dataclass

FP16_BYTES = 2


@dataclass(frozen=True)
class ModelArch:
    key: str
    hf_name: str  # also the folder name in the Vidur profiling data
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden: int
    vocab: int
    num_params: int

    def weight_bytes(self, tp: int = 1) -> int:
        return self.num_params * FP16_BYTES // tp

    def kv_bytes_per_token(self, tp: int = 1) -> int:
        """K and V, every layer, this GPU's share of the KV heads, fp16."""
        return 2 * self.num_layers * (self.num_kv_heads // tp) * self.head_dim * FP16_BYTES

    def describe(self) -> str:
        gqa = f", GQA {self.num_kv_heads} KV heads" if self.num_kv_heads != self.num_heads else ""
        return (
            f"{self.hf_name}: {self.num_layers} layers, hidden {self.hidden}, {self.num_heads} heads of "
            f"{self.head_dim}{gqa}, vocab {self.vocab}, {self.num_params / 1e9:.2f}B params, fp16"
        )


MODELS: dict[str, ModelArch] = {
    "llama-2-7b": ModelArch(
        "llama-2-7b", "meta-llama/Llama-2-7b-hf", 32, 32, 32, 128, 4096, 32000, 6_738_415_616
    ),
    "llama-3-8b": ModelArch(
        "llama-3-8b", "meta-llama/Meta-Llama-3-8B", 32, 32, 8, 128, 4096, 128256, 8_030_261_248
    ),
    "llama-2-70b": ModelArch(
        "llama-2-70b", "meta-llama/Llama-2-70b-hf", 80, 64, 8, 128, 8192, 32000, 68_976_648_192
    ),
}
