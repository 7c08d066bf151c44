"""First-principles costs for what the Vidur tables do not measure, and GPU-to-GPU scaling.

Attention was not measured (the attention tables are not in the shared data), so:
- decode attention is memory bound: every decoding sequence streams its whole KV cache once per step;
- prefill attention is compute bound: 4 * head_dim FLOPs per head per causal (query, key) pair
  (QK^T and PV, 2 FLOPs per multiply-add each), in every layer.
The lm_head runs only on the last token of each sequence (vLLM computes logits for sampled positions
only), so its weight read is a per-step cost and its FLOPs a per-sequence cost.
"""

from __future__ import annotations

from block.profiles.architectures import FP16_BYTES, ModelArch
from block.profiles.gpus import GEMM_EFFICIENCY, MEMORY_EFFICIENCY, GpuSpec


def decode_kv_token_s(arch: ModelArch, gpu: GpuSpec, tp: int = 1) -> float:
    """Seconds per context token read by decode attention."""
    return arch.kv_bytes_per_token(tp) / (gpu.mem_bandwidth * MEMORY_EFFICIENCY)


def prefill_pair_flops(arch: ModelArch, tp: int = 1) -> int:
    return 4 * arch.num_layers * (arch.num_heads // tp) * arch.head_dim


def prefill_pair_s(arch: ModelArch, gpu: GpuSpec, tp: int = 1) -> float:
    """Seconds per causal (query, key) pair of prefill attention."""
    return prefill_pair_flops(arch, tp) / (gpu.fp16_flops * gpu.prefill_attention_efficiency)


def lm_head_step_s(arch: ModelArch, gpu: GpuSpec, tp: int = 1) -> float:
    """Reading the lm_head weights once per step (memory bound at the batch sizes that matter)."""
    return arch.vocab * arch.hidden * FP16_BYTES / tp / (gpu.mem_bandwidth * MEMORY_EFFICIENCY)


def lm_head_seq_s(arch: ModelArch, gpu: GpuSpec, tp: int = 1) -> float:
    """lm_head FLOPs of one sampled token (adding it to the weight read slightly overestimates)."""
    return 2 * arch.vocab * arch.hidden / tp / (gpu.fp16_flops * GEMM_EFFICIENCY)


def allreduce_s(arch: ModelArch, gpu: GpuSpec, tp: int, num_tokens: int) -> float:
    """Tensor-parallel all-reduces of one step: two per layer (after attention and after the MLP),
    each latency + ring traffic 2(tp-1)/tp of the activations over the bus bandwidth."""
    if tp == 1:
        return 0.0
    if gpu.allreduce_bus_bandwidth <= 0:
        raise ValueError(f"{gpu.key}: no interconnect numbers for tensor parallelism")
    message = num_tokens * arch.hidden * FP16_BYTES
    one = gpu.allreduce_latency_s + 2 * (tp - 1) / tp * message / gpu.allreduce_bus_bandwidth
    return 2 * arch.num_layers * one


def num_gpu_blocks(
    arch: ModelArch,
    gpu: GpuSpec,
    tp: int,
    block_size: int,
    runtime_reserve_bytes: float,
    gpu_memory_utilization: float = 0.9,
) -> int:
    """KV blocks that fit beside the weights, as vLLM sizes its cache."""
    free = gpu.memory_bytes * gpu_memory_utilization - arch.weight_bytes(tp) - runtime_reserve_bytes
    blocks = int(free // (block_size * arch.kv_bytes_per_token(tp)))
    if blocks <= 0:
        raise ValueError(f"{arch.key} (tp={tp}) does not fit on {gpu.key}")
    return blocks


def runtime_reserve_from(
    arch: ModelArch, gpu: GpuSpec, blocks: int, block_size: int, gpu_memory_utilization: float = 0.9
) -> float:
    """The non-KV, non-weight memory (activations, CUDA graphs, allocator slack) implied by a
    known vLLM block count; used to calibrate `num_gpu_blocks` for the other GPUs."""
    kv = blocks * block_size * arch.kv_bytes_per_token()
    return gpu.memory_bytes * gpu_memory_utilization - arch.weight_bytes() - kv


def memory_bound_share(num_tokens: int, gpu: GpuSpec) -> float:
    """Share of a linear layer's time that is memory bound on `gpu`.

    An fp16 GEMM over n tokens does 2 FLOPs per weight per token and reads 2 bytes per weight: its
    arithmetic intensity is about n FLOP/byte. With memory time W/BW and compute time n*W/FLOPS the
    memory-bound share is 1 / (1 + n / ridge), ridge = FLOPS/BW (153 FLOP/byte on an A100).
    """
    return 1.0 / (1.0 + num_tokens / gpu.ridge_flops_per_byte)


def scale_linear_time(seconds: float, num_tokens: int, src: GpuSpec, dst: GpuSpec) -> float:
    """Carry a measured linear-layer time from `src` to `dst` by a roofline-weighted mix of the
    bandwidth ratio (small token counts) and the FLOP ratio (large token counts)."""
    w = memory_bound_share(num_tokens, src)
    ratio = w * src.mem_bandwidth / dst.mem_bandwidth + (1 - w) * src.fp16_flops / dst.fp16_flops
    return seconds * ratio


def linear_bytes(arch: ModelArch, num_tokens: int) -> int:
    """Bytes the linear layers of one step move: every weight once, plus each token's activations in and
    out of each GEMM (fused qkv, o, fused gate/up, down), fp16."""
    kv_width = arch.num_kv_heads * arch.head_dim
    activations = 6 * arch.hidden + 2 * kv_width + 3 * arch.intermediate
    return FP16_BYTES * arch.num_layers * (arch.linear_params_per_layer() + num_tokens * activations)


def linear_flops(arch: ModelArch, num_tokens: int) -> int:
    """2 FLOPs per weight per token."""
    return 2 * arch.linear_params() * num_tokens


def scale_linear_to_arch(
    seconds: float, num_tokens: int, src: ModelArch, dst: ModelArch, gpu: GpuSpec
) -> float:
    """Carry a measured linear-layer time from model `src` to model `dst` on the same GPU: the ratio of
    bytes moved where the GEMMs are memory bound, of FLOPs where they are compute bound (the same
    roofline weight as scale_linear_time)."""
    w = memory_bound_share(num_tokens, gpu)
    byte_ratio = linear_bytes(dst, num_tokens) / linear_bytes(src, num_tokens)
    flop_ratio = linear_flops(dst, num_tokens) / linear_flops(src, num_tokens)
    return seconds * (w * byte_ratio + (1 - w) * flop_ratio)
