"""A step-time profile: the duration of one engine step as a function of the batch.

One forward pass of a decoder-only transformer over a batch costs, to a good approximation:

    step = overhead                                 scheduler, sampling, kernel launches (per step)
         + per_seq * seqs                           per-sequence bookkeeping and sampling
         + linear(tokens)                           all non-attention layers; depends only on the
                                                    number of tokens in the step (measured, piecewise
                                                    linear between knots)
         + decode_kv * kv_tokens_read               decode attention is memory bound: it streams the
                                                    KV cache of every decoding sequence once
         + prefill_pair * prefill_attention_pairs   prefill attention is compute bound: one unit per
                                                    (query token, key token) pair under the causal mask

Outside the steps, `request_overhead(prompt_tokens)` is the latency a request pays once, off the engine's
clock: HTTP, parsing and tokenising the prompt, handing it to the engine core, streaming its first token
back. It is `request_overhead_s` plus `request_overhead_per_token_s` per prompt token (a long prompt costs
more to parse and hand over). Fitted profiles measure it (time to first token minus prefill time, engine
idle, over prompt lengths); the emulator delays each request's admission by it and forecasts include it.
Profiles derived from operator tables leave it 0.

The formula itself is `StepCost.seconds` (step_cost.py), the one place every path times a step with.

Profiles are small JSON files in `block/profiles/data/`, each naming its sources and assumptions.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field, replace
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from block.profiles.step_cost import StepCost

DATA_PACKAGE = "block.profiles.data"
MAX_SCALED_VIEWS = 256  # calibrated views kept per profile (factors are quantised: few are ever used)


@dataclass(frozen=True, slots=True)
class BatchShape:
    """What a step costs depends on these numbers only."""

    num_tokens: int = 0  # tokens computed in the step (decode tokens + prefill chunk tokens)
    num_seqs: int = 0  # sequences in the step
    num_decode_seqs: int = 0  # sequences that decode one token
    kv_tokens_read: int = 0  # context tokens attended to by the decoding sequences
    prefill_attention_pairs: int = 0  # causal (query, key) pairs of the prefill chunks


@dataclass(frozen=True)
class Profile:
    name: str
    model: str
    gpu: str
    step_overhead_s: float
    per_seq_s: float
    decode_kv_token_s: float
    prefill_pair_s: float
    linear_knots_tokens: tuple[int, ...]
    linear_knots_s: tuple[float, ...]
    # Engine defaults for this model x GPU (max_num_seqs, max_num_batched_tokens, block_size, ...).
    engine_defaults: dict[str, int] = field(default_factory=dict)
    description: str = ""
    sources: tuple[str, ...] = ()
    assumptions: tuple[str, ...] = ()
    request_overhead_s: float = 0.0  # per request, outside engine steps (see the module docstring)
    request_overhead_per_token_s: float = 0.0  # and per prompt token

    def __post_init__(self) -> None:
        if self.request_overhead_s < 0 or self.request_overhead_per_token_s < 0:
            raise ValueError(f"profile {self.name}: request_overhead_s and _per_token_s must be >= 0")
        if len(self.linear_knots_tokens) < 2 or len(self.linear_knots_tokens) != len(self.linear_knots_s):
            raise ValueError(f"profile {self.name}: need >= 2 linear knots with matching times")
        if list(self.linear_knots_tokens) != sorted(set(self.linear_knots_tokens)):
            raise ValueError(f"profile {self.name}: linear knots must be strictly increasing")

    # -- evaluation ---------------------------------------------------------------------------

    def request_overhead(self, prompt_tokens: int) -> float:
        """Seconds a request with this prompt spends outside engine steps before it is queued."""
        return self.request_overhead_s + self.request_overhead_per_token_s * prompt_tokens

    def linear_time(self, num_tokens: int) -> float:
        """Time of the non-attention layers for `num_tokens` tokens: piecewise linear, extrapolated."""
        if num_tokens <= 0:
            return 0.0
        xs, ys = self.linear_knots_tokens, self.linear_knots_s
        i = bisect.bisect_left(xs, num_tokens)
        if i == 0:
            return ys[0]  # below the first knot the layers are weight-bandwidth bound: flat
        if i == len(xs):
            i -= 1  # extrapolate along the last segment
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        return y0 + (y1 - y0) * (num_tokens - x0) / (x1 - x0)

    def scaled(self, decode: float, prefill: float) -> Profile:
        """This profile with its steps corrected per phase by online calibration (StepCost.scaled): a
        runtime view, never saved (`to_dict` is the nominal profile). (1, 1) is this profile itself;
        the views are kept per factor pair, so a forecaster rebuilt with the same factors finds its
        tables built."""
        if decode == 1.0 and prefill == 1.0:
            return self
        views = self._scaled_views
        view = views.get((decode, prefill))
        if view is None:
            if len(views) >= MAX_SCALED_VIEWS:
                views.clear()
            view = views[(decode, prefill)] = replace(self)
            view.__dict__["cost"] = self.cost.scaled(decode, prefill)  # instead of the cached_property's
        return view

    @cached_property
    def _scaled_views(self) -> dict[tuple[float, float], Profile]:
        return {}

    @cached_property
    def cost(self) -> StepCost:
        """The step-time formula with this profile's coefficients (built once, on first use)."""
        return StepCost(
            self.step_overhead_s,
            self.per_seq_s,
            self.decode_kv_token_s,
            self.prefill_pair_s,
            self.linear_time,
        )

    def step_time(self, shape: BatchShape) -> float:
        return self.cost.seconds(
            shape.num_tokens, shape.num_seqs, shape.kv_tokens_read, shape.prefill_attention_pairs
        )

    def decode_step_time(self, num_seqs: int, kv_tokens_read: int) -> float:
        """A decode-only step: `num_seqs` sequences, one token each."""
        return self.cost.seconds(num_seqs, num_seqs, kv_tokens_read)

    def prefill_time(self, prompt_tokens: int, chunk: int) -> float:
        """Time to prefill one prompt alone in chunks of `chunk` tokens (used by `profile show`)."""
        total, done = 0.0, 0
        while done < prompt_tokens:
            n = min(chunk, prompt_tokens - done)
            pairs = n * done + n * (n + 1) // 2
            total += self.step_time(BatchShape(n, 1, 0, 0, pairs))
            done += n
        return total

    # -- (de)serialisation --------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = {
            "name": self.name,
            "model": self.model,
            "gpu": self.gpu,
            "description": self.description,
            "sources": list(self.sources),
            "assumptions": list(self.assumptions),
            "engine_defaults": dict(self.engine_defaults),
            "step_overhead_s": self.step_overhead_s,
            "per_seq_s": self.per_seq_s,
            "decode_kv_token_s": self.decode_kv_token_s,
            "prefill_pair_s": self.prefill_pair_s,
            "linear": {"tokens": list(self.linear_knots_tokens), "seconds": list(self.linear_knots_s)},
        }
        if self.request_overhead_s:  # optional: profiles without them stay as they were
            d["request_overhead_s"] = self.request_overhead_s
        if self.request_overhead_per_token_s:
            d["request_overhead_per_token_s"] = self.request_overhead_per_token_s
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Profile:
        try:
            return cls(
                name=d["name"],
                model=d.get("model", ""),
                gpu=d.get("gpu", ""),
                description=d.get("description", ""),
                sources=tuple(d.get("sources", ())),
                assumptions=tuple(d.get("assumptions", ())),
                engine_defaults={k: int(v) for k, v in d.get("engine_defaults", {}).items()},
                step_overhead_s=float(d["step_overhead_s"]),
                per_seq_s=float(d.get("per_seq_s", 0.0)),
                decode_kv_token_s=float(d["decode_kv_token_s"]),
                prefill_pair_s=float(d["prefill_pair_s"]),
                linear_knots_tokens=tuple(int(x) for x in d["linear"]["tokens"]),
                linear_knots_s=tuple(float(x) for x in d["linear"]["seconds"]),
                request_overhead_s=float(d.get("request_overhead_s", 0.0)),
                request_overhead_per_token_s=float(d.get("request_overhead_per_token_s", 0.0)),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"malformed profile: missing or bad field {e}") from e

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def available_profiles() -> list[str]:
    files = resources.files(DATA_PACKAGE).iterdir()
    return sorted(f.name.removesuffix(".json") for f in files if f.name.endswith(".json"))


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a shipped profile by name (`llama-2-7b-a30`) or any profile JSON by path."""
    path = Path(name_or_path)
    if path.suffix == ".json" and path.exists():
        return Profile.from_dict(json.loads(path.read_text()))
    resource = resources.files(DATA_PACKAGE) / f"{name_or_path}.json"
    if not resource.is_file():
        known = ", ".join(available_profiles()) or "none"
        raise ValueError(f"unknown profile {str(name_or_path)!r} (shipped: {known}; or give a .json path)")
    return Profile.from_dict(json.loads(resource.read_text()))
