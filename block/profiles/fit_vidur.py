"""Build the shipped step-time profiles from Vidur's measured tables plus first-principles attention.

`fit_all(data_dir)` reproduces every JSON in block/profiles/data (the `block profile fit-vidur`
command). Measured: the non-attention layers (Vidur mlp.csv, TP=1 rows, or TP=4 for Llama-2-70B).
Modelled: attention (roofline.py), lm_head, tensor-parallel all-reduce, CPU overheads, KV-cache size.
The A30 profile is derived from the A100 fit. Every assumption is written into the profile it shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from block.profiles import roofline
from block.profiles.architectures import MODELS, ModelArch
from block.profiles.gpus import GEMM_EFFICIENCY, GIB, GPUS, MEMORY_EFFICIENCY, GpuSpec
from block.profiles.knots import KnotFit, fit_knots
from block.profiles.profile import Profile
from block.profiles.synthetic import PAPER_ENGINE, tiny_fast_profile
from block.profiles.vidur_csv import LAYER_OPS, csv_path, read_linear_times

# vLLM 0.7 (V0 engine, CUDA graphs for decode): scheduling, input preparation, sampling, output
# processing and the launch gaps CUDA graphs do not hide cost a few ms per step, plus a little per
# sequence (block tables, sampling metadata, detokenisation). Public profiles of V0 put the CPU side
# at a few ms per step; we take 3 ms + 30 us per sequence for every GPU (the host, not the GPU, pays).
CPU_STEP_OVERHEAD_S = 3.0e-3
CPU_PER_SEQ_S = 30e-6

MAX_KNOTS = 16
MAX_TOKENS = 4096  # fit range; beyond it the profile extrapolates along the last (compute-bound) segment
BLOCK_SIZE = 16
GPU_MEMORY_UTILIZATION = 0.9
# vLLM 0.7 defaults: 256 sequences; chunked prefill with a 2,048-token budget (V1's online-serving default).
DEFAULT_ENGINE = {
    "max_num_seqs": 256,
    "max_num_batched_tokens": 2048,
    "block_size": BLOCK_SIZE,
    "max_model_len": 4096,
}
LICENCE = "Microsoft Vidur profiling data, MIT licence, see vidur-profiling/LICENSE"


@dataclass(frozen=True)
class Target:
    name: str
    model: str  # key of MODELS
    gpu: str  # key of GPUS and folder of the Vidur data
    tp: int = 1
    # Scale this profile (fitted or derived before it) instead of reading a table: to another GPU by the
    # GPUs' figures, to another model by the two architectures' byte and FLOP ratios, or both.
    derived_from: str | None = None
    engine: dict[str, int] | None = None  # fixed engine settings (the paper's) instead of computed ones


TARGETS: tuple[Target, ...] = (
    Target("llama-2-7b-a100", "llama-2-7b", "a100"),
    Target("llama-2-7b-h100", "llama-2-7b", "h100"),
    Target("llama-2-7b-a40", "llama-2-7b", "a40"),
    Target("llama-3-8b-a100", "llama-3-8b", "a100"),
    # 138 GB of weights do not fit one 80 GB A100: four GPUs with tensor parallelism, as usually served.
    Target("llama-2-70b-a100-tp4", "llama-2-70b", "a100", tp=4),
    # The Block paper's GPU; Vidur has no A30 table.
    Target("llama-2-7b-a30", "llama-2-7b", "a30", derived_from="llama-2-7b-a100", engine=PAPER_ENGINE),
    # The paper's extension model; Vidur has no Qwen2 table: carried from the measured Llama-2-7B A100
    # table by architecture, then to the A30 as Llama-2-7B is, with the paper's engine settings there
    # (the KV-cache size is computed: Qwen2-7B's 4 KV heads fit about 7x the blocks).
    Target("qwen2-7b-a100", "qwen2-7b", "a100", derived_from="llama-2-7b-a100"),
    Target(
        "qwen2-7b-a30",
        "qwen2-7b",
        "a30",
        derived_from="qwen2-7b-a100",
        engine={k: v for k, v in PAPER_ENGINE.items() if k != "num_gpu_blocks"},
    ),
)


@dataclass(frozen=True)
class FitResult:
    profile: Profile
    fit: KnotFit | None  # None for derived and synthetic profiles


def runtime_reserve_bytes() -> float:
    """Calibrated so the A30 + Llama-2-7B formula gives the paper's 1,052 blocks (about 0.83 GiB)."""
    return roofline.runtime_reserve_from(
        MODELS["llama-2-7b"], GPUS["a30"], PAPER_ENGINE["num_gpu_blocks"], BLOCK_SIZE, GPU_MEMORY_UTILIZATION
    )


def required_tables(data_dir: Path) -> list[Path]:
    return [csv_path(data_dir, t.gpu, MODELS[t.model].hf_name) for t in TARGETS if t.derived_from is None]


def _round(x: float) -> float:
    return float(f"{x:.5g}")  # five significant digits: far below the fit error, stable JSON


def _engine(arch: ModelArch, gpu: GpuSpec, tp: int) -> dict[str, int]:
    blocks = roofline.num_gpu_blocks(
        arch, gpu, tp, BLOCK_SIZE, runtime_reserve_bytes(), GPU_MEMORY_UTILIZATION
    )
    engine = {**DEFAULT_ENGINE, "num_gpu_blocks": blocks}
    if tp > 1:
        engine["tensor_parallel_size"] = tp
    return engine


def _engine_for(target: Target) -> dict[str, int]:
    """The target's fixed settings, with the KV-cache size computed where they leave it out."""
    computed = _engine(MODELS[target.model], GPUS[target.gpu], target.tp)
    if target.engine is None:
        return computed
    return {
        **target.engine,
        "num_gpu_blocks": target.engine.get("num_gpu_blocks", computed["num_gpu_blocks"]),
    }


def _common_assumptions(arch: ModelArch, gpu: GpuSpec, tp: int) -> list[str]:
    kv = arch.kv_bytes_per_token(tp)
    per_gpu = f" per GPU (tp={tp})" if tp > 1 else ""
    effective_bw = gpu.mem_bandwidth * MEMORY_EFFICIENCY / 1e9
    return [
        f"model: {arch.describe()}",
        f"GPU: {gpu.describe()} (datasheet peaks)",
        f"decode attention (not measured): KV of every context token, 2 x {arch.num_layers} layers x "
        f"{arch.num_kv_heads // tp} KV heads x {arch.head_dim} x 2 bytes = {kv} bytes/token{per_gpu}, "
        f"read at {MEMORY_EFFICIENCY:.0%} of peak bandwidth ({effective_bw:.0f} GB/s)",
        f"prefill attention (not measured): 4 x {arch.num_layers} layers x {arch.num_heads // tp} heads x "
        f"{arch.head_dim} = {roofline.prefill_pair_flops(arch, tp)} FLOPs per causal (query, key) pair at "
        f"{gpu.prefill_attention_efficiency:.0%} of peak fp16 tensor FLOPs (FlashAttention-2)",
        f"lm_head (not in the table): vocab x hidden fp16 weights read once per step at "
        f"{MEMORY_EFFICIENCY:.0%} of peak bandwidth (in step_overhead_s); 2 x vocab x hidden FLOPs per "
        f"sampled sequence at {GEMM_EFFICIENCY:.0%} of peak (in per_seq_s)",
        f"CPU: {CPU_STEP_OVERHEAD_S * 1e3:.1f} ms per step (vLLM 0.7 V0 scheduler, input preparation, "
        f"sampling, output processing, launch gaps) + {CPU_PER_SEQ_S * 1e6:.0f} us per sequence: "
        "assumed, not measured",
    ]


def _engine_assumption(engine: dict[str, int], arch: ModelArch, tp: int) -> str:
    reserve = runtime_reserve_bytes() / GIB
    return (
        f"engine: max_num_seqs {engine['max_num_seqs']}, "
        f"max_num_batched_tokens {engine['max_num_batched_tokens']}, "
        f"max_model_len {engine['max_model_len']}; num_gpu_blocks {engine['num_gpu_blocks']} = "
        f"({GPU_MEMORY_UTILIZATION} x memory - weights - {reserve:.2f} GiB runtime reserve) / "
        f"({BLOCK_SIZE} x {arch.kv_bytes_per_token(tp)} bytes); the reserve (activations, CUDA graphs) is "
        f"calibrated so the A30 paper setup gives its 1,052 blocks"
    )


def _profile(
    target: Target,
    knots: tuple[tuple[int, ...], tuple[float, ...]],
    description: str,
    sources: list[str],
    assumptions: list[str],
    engine: dict[str, int],
) -> Profile:
    arch, gpu, tp = MODELS[target.model], GPUS[target.gpu], target.tp
    return Profile(
        name=target.name,
        model=arch.hf_name,
        gpu=gpu.name + (f" x{tp} (tensor parallel)" if tp > 1 else ""),
        description=description,
        sources=tuple(sources),
        assumptions=tuple(assumptions),
        engine_defaults=engine,
        step_overhead_s=_round(CPU_STEP_OVERHEAD_S + roofline.lm_head_step_s(arch, gpu, tp)),
        per_seq_s=_round(CPU_PER_SEQ_S + roofline.lm_head_seq_s(arch, gpu, tp)),
        decode_kv_token_s=_round(roofline.decode_kv_token_s(arch, gpu, tp)),
        prefill_pair_s=_round(roofline.prefill_pair_s(arch, gpu, tp)),
        linear_knots_tokens=knots[0],
        linear_knots_s=tuple(_round(s) for s in knots[1]),
    )


def fit_measured(target: Target, data_dir: Path, max_knots: int = MAX_KNOTS) -> FitResult:
    arch, gpu, tp = MODELS[target.model], GPUS[target.gpu], target.tp
    path = csv_path(data_dir, target.gpu, arch.hf_name)
    meas = read_linear_times(path, arch.num_layers, tp)
    # The table times one GPU's shard of each kernel; the all-reduces between shards are added here.
    seconds = [
        s + roofline.allreduce_s(arch, gpu, tp, n) for n, s in zip(meas.tokens, meas.seconds, strict=True)
    ]
    fit = fit_knots(meas.tokens, seconds, max_knots=max_knots, max_tokens=MAX_TOKENS)
    ops = ", ".join(op if n == 1 else f"{n} x {op}" for op, n in LAYER_OPS.items())
    assumptions = [
        f"linear layers (measured): Vidur per-layer medians at TP={tp}, emb + {arch.num_layers} x ({ops}) + "
        f"final norm (= one input_layernorm); {len(fit.tokens)} knots over 1..{MAX_TOKENS} tokens, "
        f"least squares in relative error on the monotone (isotonic) medians; vs the raw medians max error "
        f"{fit.max_rel_error:.1%} (at {fit.worst_tokens} tokens: 128-token GEMM tile steps are averaged), "
        f"RMS {fit.rms_rel_error:.1%}",
        *_common_assumptions(arch, gpu, tp),
    ]
    if tp > 1:
        assumptions.append(
            f"tensor parallel {tp}: two all-reduces per layer, each {gpu.allreduce_latency_s * 1e6:.0f} us + "
            f"2(tp-1)/tp x tokens x hidden x 2 bytes / {gpu.allreduce_bus_bandwidth / 1e9:.0f} GB/s "
            f"bus bandwidth (NVLink), added to the measured times before fitting"
        )
    engine = _engine_for(target)
    assumptions.append(_engine_assumption(engine, arch, tp))
    rel = f"{data_dir.name}/{target.gpu}/{arch.hf_name}/mlp.csv"
    sources = [f"{rel} ({LICENCE})", f"{gpu.name} datasheet (NVIDIA)"]
    description = (
        f"{arch.hf_name} fp16 on {gpu.name}{f' x{tp}' if tp > 1 else ''}, vLLM-style engine: "
        f"linear layers fit from Vidur measurements, attention from bandwidth and FLOPs."
    )
    knots = (fit.tokens, fit.seconds)
    return FitResult(_profile(target, knots, description, sources, assumptions, engine), fit)


def derive(target: Target, base: FitResult) -> FitResult:
    """Carry a profile to another model (architecture byte and FLOP ratios) and/or another GPU (the
    GPUs' bandwidth and FLOP ratios)."""
    arch, gpu, tp = MODELS[target.model], GPUS[target.gpu], target.tp
    src_target = next(t for t in TARGETS if t.name == target.derived_from)
    src_arch, src = MODELS[src_target.model], GPUS[src_target.gpu]
    tokens = base.profile.linear_knots_tokens
    seconds = base.profile.linear_knots_s
    # A chain (model, then GPU) keeps the earlier step's statement.
    linear = [a for a in base.profile.assumptions if a.startswith("linear layers (derived from another")]
    if src_arch.key != arch.key:
        seconds = tuple(
            roofline.scale_linear_to_arch(s, n, src_arch, arch, src)
            for n, s in zip(tokens, seconds, strict=True)
        )
        linear.append(_arch_scaling(base.profile.name, src_arch, arch, src))
    if src.key != gpu.key:
        scaled = [roofline.scale_linear_time(s, n, src, gpu) for n, s in zip(tokens, seconds, strict=True)]
        # The ratio falls from the bandwidth ratio to the FLOP ratio as n grows, which could dip a flat
        # stretch.
        seconds = tuple(max(scaled[: i + 1]) for i in range(len(scaled)))
        linear.append(_gpu_scaling(base.profile.name, src, gpu))
    engine = _engine_for(target)
    assumptions = [*linear, *_common_assumptions(arch, gpu, tp)]
    if target.engine is PAPER_ENGINE:
        assumptions.append(
            "engine: the Block paper's vLLM 0.7.2 (V0, chunked prefill) setup: max_num_batched_tokens 512, "
            "max_num_seqs 48, max_model_len 4096, 1,052 KV blocks of 16 tokens (as the paper reports them)"
        )
    else:
        assumptions.append(_engine_assumption(engine, arch, tp))
    datasheets = (
        f"{src.name} and {gpu.name} datasheets (NVIDIA)"
        if src.key != gpu.key
        else f"{gpu.name} datasheet (NVIDIA)"
    )
    sources = [s for s in base.profile.sources if "datasheet" not in s]
    if src_arch.key != arch.key:
        sources.append(f"{arch.hf_name} config.json (layers, widths, heads, vocab)")
    sources.append(datasheets)
    steps = []
    if src_arch.key != arch.key:
        steps.append("the two architectures' byte and FLOP ratios")
    if src.key != gpu.key:
        steps.append("the two GPUs' bandwidth and FLOP ratios")
    description = (
        f"{arch.hf_name} fp16 on {gpu.name}, derived from the {base.profile.name} "
        f"{'fit' if base.fit is not None else 'profile'} by "
        f"{' and '.join(steps)}; attention from bandwidth and FLOPs."
    )
    return FitResult(_profile(target, (tokens, seconds), description, sources, assumptions, engine), None)


def _gpu_scaling(base: str, src: GpuSpec, gpu: GpuSpec) -> str:
    return (
        f"linear layers (derived): the {base} knots t(n) scaled to t(n) x [w(n) x "
        f"{src.mem_bandwidth / 1e9:.0f}/{gpu.mem_bandwidth / 1e9:.0f} + (1 - w(n)) x "
        f"{src.fp16_flops / 1e12:.0f}/{gpu.fp16_flops / 1e12:.0f}] (bandwidth ratio where memory bound, FLOP "
        f"ratio where compute bound), w(n) = 1 / (1 + n / {src.ridge_flops_per_byte:.0f}) the memory-bound "
        f"share of an fp16 GEMM over n tokens (intensity about n FLOP/byte; {src.key} ridge "
        f"{src.ridge_flops_per_byte:.0f} FLOP/byte); assumes the {gpu.key} reaches the same fraction of its "
        "peaks"
    )


def _arch_scaling(base: str, src: ModelArch, dst: ModelArch, gpu: GpuSpec) -> str:
    ratio_1 = roofline.scale_linear_to_arch(1.0, 1, src, dst, gpu)
    ratio_4096 = roofline.scale_linear_to_arch(1.0, 4096, src, dst, gpu)
    return (
        f"linear layers (derived from another model): the {base} knots t(n) scaled to t(n) x [w(n) x "
        f"bytes ratio + (1 - w(n)) x FLOP ratio] on the same GPU, w(n) = 1 / (1 + n / "
        f"{gpu.ridge_flops_per_byte:.0f}); bytes = fp16 weights of the linear layers + each token's "
        f"activations in and out of the fused qkv, o, gate/up and down GEMMs, FLOPs = 2 x weights x tokens; "
        f"{dst.hf_name} ({dst.num_layers} layers, hidden {dst.hidden}, {dst.num_heads} query / "
        f"{dst.num_kv_heads} KV heads, intermediate {dst.intermediate}, {dst.linear_params() / 1e9:.3f}B "
        f"linear weights) over {src.hf_name} ({src.linear_params() / 1e9:.3f}B): x{ratio_1:.4f} at 1 token, "
        f"x{ratio_4096:.4f} at 4,096; assumes the same kernel efficiency for both shapes (not measured; "
        "biases and the embedding lookup left out)"
    )


def fit_all(data_dir: Path, out_dir: Path | None = None, max_knots: int = MAX_KNOTS) -> list[FitResult]:
    """Fit every target (and write its JSON plus the synthetic one into `out_dir`, if given)."""
    missing = [p for p in required_tables(data_dir) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"Vidur table {missing[0]} not found ({len(missing)} missing)")
    results: dict[str, FitResult] = {}
    for target in TARGETS:
        if target.derived_from is None:
            results[target.name] = fit_measured(target, data_dir, max_knots)
        else:
            results[target.name] = derive(target, results[target.derived_from])
    out = [*results.values(), FitResult(tiny_fast_profile(), None)]
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for r in out:
            r.profile.save(out_dir / f"{r.profile.name}.json")
    return out


def check_fit(profile: Profile, fit: KnotFit) -> float:
    """Max relative difference between the stored (rounded) knots and the fit: a self-check."""
    return max(abs(profile.linear_time(n) - s) / s for n, s in zip(fit.tokens, fit.seconds, strict=True))
