"""Published peak numbers of the GPUs we have profiles for, and the efficiencies we assume on them.

Peaks are from NVIDIA's datasheets (dense fp16 tensor-core FLOPs, no sparsity). The efficiencies turn
peaks into what real kernels reach; they are assumptions, stated in every profile that uses them.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3


@dataclass(frozen=True)
class GpuSpec:
    key: str
    name: str
    memory_bytes: int
    mem_bandwidth: float  # bytes/s, peak
    fp16_flops: float  # FLOP/s, dense fp16 tensor-core peak
    # FlashAttention-2 forward reaches about half of dense peak on Ampere; on Hopper FA2 (what vLLM 0.7
    # uses) does not use wgmma and reaches a smaller fraction.
    prefill_attention_efficiency: float = 0.5
    # Effective all-reduce bus bandwidth (bytes/s) and per-call latency for tensor parallelism, if any.
    allreduce_bus_bandwidth: float = 0.0
    allreduce_latency_s: float = 0.0

    @property
    def ridge_flops_per_byte(self) -> float:
        """Arithmetic intensity at which a kernel turns from memory bound to compute bound."""
        return self.fp16_flops / self.mem_bandwidth

    def describe(self) -> str:
        return (
            f"{self.name}: {self.mem_bandwidth / 1e9:.0f} GB/s, "
            f"{self.fp16_flops / 1e12:.0f} TFLOPS fp16 dense, {self.memory_bytes / GIB:.0f} GiB"
        )


# Decode attention (PagedAttention) and the lm_head weight read are memory bound; real kernels stream
# at about 70% of peak bandwidth (Vidur's measured batch-1 linear layers reach 72-78%).
MEMORY_EFFICIENCY = 0.7
# Large fp16 GEMMs reach ~65% of peak in the Vidur tables (e.g. Llama-2-7B, 2,048 tokens on A100).
GEMM_EFFICIENCY = 0.6

GPUS: dict[str, GpuSpec] = {
    "a100": GpuSpec(
        "a100",
        "NVIDIA A100 SXM4 80GB",
        80 * GIB,
        2039e9,
        312e12,
        allreduce_bus_bandwidth=230e9,  # NVLink3, NCCL bus bandwidth measured on DGX A100 for large messages
        allreduce_latency_s=10e-6,  # small-message all-reduce (vLLM custom all-reduce / NCCL LL)
    ),
    "h100": GpuSpec(
        "h100",
        "NVIDIA H100 SXM5 80GB",
        80 * GIB,
        3350e9,
        989e12,
        prefill_attention_efficiency=0.35,
        allreduce_bus_bandwidth=360e9,
        allreduce_latency_s=8e-6,
    ),
    "a40": GpuSpec("a40", "NVIDIA A40 48GB", 48 * GIB, 696e9, 149.7e12),
    "a30": GpuSpec("a30", "NVIDIA A30 24GB", 24 * GIB, 933e9, 165e12),
}
