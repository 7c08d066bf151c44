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
    intermediate: int  # MLP width (gate, up and down projections)

    def linear_params_per_layer(self) -> int:
        """Weights of one decoder layer's linear layers: q and o (hidden x hidden), k and v (hidden x KV
        width), gate, up and down (hidden x intermediate). Per token, a GEMM does 2 FLOPs per weight."""
        kv_width = self.num_kv_heads * self.head_dim
        return (
            2 * self.hidden * self.hidden + 2 * self.hidden * kv_width + 3 * self.hidden * self.intermediate
        )

    def linear_params(self) -> int:
        return self.num_layers * self.linear_params_per_layer()

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
        "llama-2-7b", "meta-llama/Llama-2-7b-hf", 32, 32, 32, 128, 4096, 32000, 6_738_415_616, 11008
    ),
    "llama-3-8b": ModelArch(
        "llama-3-8b", "meta-llama/Meta-Llama-3-8B", 32, 32, 8, 128, 4096, 128256, 8_030_261_248, 14336
    ),
    "llama-2-70b": ModelArch(
        "llama-2-70b", "meta-llama/Llama-2-70b-hf", 80, 64, 8, 128, 8192, 32000, 68_976_648_192, 28672
    ),
    # Untied embedding and lm_head; the q/k/v biases (about 0.1M weights per layer) are left out of the
    # linear-layer count as negligible.
    "qwen2-7b": ModelArch("qwen2-7b", "Qwen/Qwen2-7B", 28, 28, 4, 128, 3584, 152064, 7_615_616_512, 18944),
}
