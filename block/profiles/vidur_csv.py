"""Read Vidur's measured per-operation tables (mlp.csv) into one number per token count.

Vidur (github.com/microsoft/vidur, MIT licence) times each non-attention operation of ONE decoder layer,
in milliseconds, by number of tokens and tensor-parallel degree. One engine step runs every layer, so
the step's non-attention time is the embedding once plus `num_layers` times the per-layer sum.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

# Operations of one decoder layer. `add` is the residual add and a layer has two of them (after
# attention and after the MLP), as in Vidur's own execution-time model. vLLM fuses the add into
# RMSNorm, so counting it separately overestimates by about 1%: accepted.
LAYER_OPS: dict[str, int] = {
    "input_layernorm": 1,
    "attn_pre_proj": 1,  # fused QKV projection
    "attn_rope": 1,
    "attn_post_proj": 1,  # output projection
    "post_attention_layernorm": 1,
    "mlp_up_proj": 1,  # fused gate+up projection
    "mlp_act": 1,  # SiLU and multiply
    "mlp_down_proj": 1,
    "add": 2,
}
STEP_OPS: dict[str, int] = {"emb": 1}  # once per step
# The final RMSNorm before lm_head is not in the table; it costs what one input_layernorm costs.
FINAL_NORM_OP = "input_layernorm"


@dataclass(frozen=True)
class LinearMeasurements:
    """Non-attention time of one step (seconds) by number of tokens, from one mlp.csv."""

    path: Path
    tp: int
    tokens: tuple[int, ...]
    seconds: tuple[float, ...]


def csv_path(data_dir: Path, gpu_key: str, hf_name: str) -> Path:
    return data_dir / gpu_key / hf_name / "mlp.csv"


def read_linear_times(path: Path, num_layers: int, tp: int = 1, stat: str = "median") -> LinearMeasurements:
    """Sum the per-layer medians into a step time for every measured token count at degree `tp`.

    Repeated token counts (the tables measure some twice) are averaged.
    """
    if not path.is_file():
        raise FileNotFoundError(f"Vidur table not found: {path}")
    by_tokens: dict[int, list[float]] = defaultdict(list)
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            try:
                if int(row["num_tensor_parallel_workers"]) != tp:
                    continue
                ms = sum(n * float(row[f"time_stats.{op}.{stat}"]) for op, n in STEP_OPS.items())
                ms += num_layers * sum(
                    n * float(row[f"time_stats.{op}.{stat}"]) for op, n in LAYER_OPS.items()
                )
                ms += float(row[f"time_stats.{FINAL_NORM_OP}.{stat}"])
                by_tokens[int(row["num_tokens"])].append(ms / 1000.0)
            except (KeyError, ValueError) as e:
                raise ValueError(f"{path}: not a Vidur mlp.csv (bad or missing column {e})") from e
    if not by_tokens:
        raise ValueError(f"{path}: no rows with num_tensor_parallel_workers={tp}")
    tokens = tuple(sorted(by_tokens))
    return LinearMeasurements(path, tp, tokens, tuple(sum(by_tokens[n]) / len(by_tokens[n]) for n in tokens))
