"""Fit a step-time profile for any running OpenAI-compatible engine from controlled probes.

Probes run one at a time, each a fixed piece of work (token-id prompts, ignore_eos):

* prefills: one request of p prompt tokens; its chunked prefill is a known list of steps.
* decode batches: c requests of p prompt tokens sent together, decoding d tokens each.

All requests of a probe arrive at once, so the engine's batches do not depend on how long steps take: the
project's own replica model (vLLM v1 chunked-prefill scheduling) lists the exact step shapes of each
probe once, and every measurement is a known weighted sum of step times, linear in the profile's
coefficients. One bounded least-squares solve (relative errors, coefficients >= 0) fits them all.

What is measured per probe depends on the engine:
* vLLM (/metrics present): engine-clock counters, the mean inter-token latency (a weighted mean over the
  probe's steps, weight = non-first tokens emitted in the step) and the prefill time; the client's TTFT
  minus the prefill time gives the per-request overhead outside engine steps (HTTP, tokenising): a line
  over prompt lengths, kept as `request_overhead_s` + `request_overhead_per_token_s` (the emulator
  delays each request's admission by it, forecasts include it).
* anything else: client timing only, the TTFT of prefills (with an unknown request overhead) and, for
  decode batches, the window where all c requests decode together (see decode_window).

Below `flat_tokens` the non-attention layers are taken as flat: linear() is zero there and the per-step
constant lives in overhead/per_seq, which makes the constants identifiable. Single-chunk prefills cannot
tell linear(n) from the n^2 pair term; multi-chunk ones (later chunks attend to earlier ones) can.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import aiohttp
import httpx
import numpy as np

from block.profiles.profile import BatchShape, Profile
from block.realengine import engine_metrics
from block.realengine.probe_client import StreamTiming, client_session, stream_completion

PROBE_TOKEN_RANGE = (100, 1000)  # ids valid in any vocabulary of >= 1000 tokens
Log = Callable[[str], None]


@dataclass
class ProbePlan:
    concurrency: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 48)
    decode_prompts: tuple[int, ...] = (16, 512, 1536)
    decode_outputs: tuple[int, ...] = (32, 128)
    prefill_prompts: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 384, 512, 1024, 2048, 3072)
    repeats: int = 3
    max_num_seqs: int = 48
    max_num_batched_tokens: int = 512
    flat_tokens: int = 32

    @classmethod
    def quick(cls, max_num_seqs: int = 48, max_num_batched_tokens: int = 512) -> ProbePlan:
        """About a fifth of the probes: for CI."""
        return cls(
            concurrency=(1, 4, 16, 48),
            decode_prompts=(16, 1024),
            decode_outputs=(64,),
            prefill_prompts=(8, 32, 128, 512, 1024, 2048),
            repeats=2,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
        )


@dataclass
class Observation:
    """A measured time that the model predicts as sum(weight * step_time(shape)) + api * overhead."""

    kind: str  # "itl" | "prefill" (engine clock) | "ttft" | "window" (client clock)
    seconds: float
    terms: list[tuple[BatchShape, float]] = field(default_factory=list)
    api: float = 0.0  # weight of the per-request overhead outside engine steps
    note: str = ""


@dataclass
class FitResult:
    profile: Profile
    request_overhead_s: float
    observations: list[Observation]
    relative_errors: list[float]

    @property
    def rms_relative_error(self) -> float:
        e = self.relative_errors
        return math.sqrt(sum(x * x for x in e) / len(e)) if e else float("nan")


# -- what the engine does for a probe -----------------------------------------------------------------


def probe_steps(c: int, p: int, d: int, plan: ProbePlan) -> list[tuple[BatchShape, int, int]]:
    """(shape, first tokens emitted, later tokens emitted) of every step of a c x (p, d) probe."""
    from block.replica.config import ReplicaConfig
    from block.replica.replica import Replica
    from block.replica.request import Request

    cfg = ReplicaConfig(
        max_num_seqs=plan.max_num_seqs,
        max_num_batched_tokens=plan.max_num_batched_tokens,
        block_size=16,
        num_gpu_blocks=1 << 22,  # probes never run out of KV cache
        max_model_len=p + d + 1,
    )
    flat = Profile("schedule-only", "", "", 0.0, 0.0, 0.0, 0.0, (1, 2), (0.0, 0.0))
    replica = Replica(cfg, flat)
    for i in range(c):
        replica.add(Request(f"r{i}", p, d))
    steps = []
    t = 0.0
    while replica.has_work:
        batch = replica.schedule()
        had_token = {id(r) for r in batch.requests if r.num_generated > 0}
        t += 1.0
        out = replica.complete(batch, t)
        later = sum(1 for r in out.emitted if id(r) in had_token)
        steps.append((batch.shape(), len(out.emitted) - later, later))
    return steps


def chunks_of(prompt: int, budget: int) -> list[int]:
    return [min(budget, prompt - done) for done in range(0, prompt, budget)]


def prefill_terms(prompt: int, budget: int) -> list[tuple[BatchShape, float]]:
    terms, done = [], 0
    for n in chunks_of(prompt, budget):
        terms.append((BatchShape(n, 1, 0, 0, n * done + n * (n + 1) // 2), 1.0))
        done += n
    return terms


def itl_terms(c: int, p: int, d: int, plan: ProbePlan) -> list[tuple[BatchShape, float]]:
    """The mean inter-token latency of a probe as a weighted mean of its step times."""
    steps = probe_steps(c, p, d, plan)
    total = sum(later for _, _, later in steps)
    return [(shape, later / total) for shape, _, later in steps if later]


class ProbeFailed(RuntimeError):
    """A request of a probe failed. One failed repeat is skipped (a pooled keep-alive connection that the
    server closed just as it was reused fails with a transport error, seen once in ~100 probes at c=32);
    a probe whose every repeat fails ends the fit."""


# -- probing ------------------------------------------------------------------------------------------


def _prompt(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(*PROBE_TOKEN_RANGE) for _ in range(n)]


async def _batch(
    client: aiohttp.ClientSession, url: str, model: str, rng: random.Random, c: int, p: int, d: int
) -> list[StreamTiming]:
    tasks = [stream_completion(client, url, model, _prompt(rng, p), d, p) for _ in range(c)]
    out = await asyncio.gather(*tasks)
    bad = [t.error for t in out if not t.ok]
    if bad:
        raise ProbeFailed(f"probe c={c} p={p} d={d} failed: {bad[0]}")
    return out


def decode_window(timings: list[StreamTiming]) -> Observation | None:
    """Client clock: the mean step time while all requests of a batch decoded together (None if too
    short). Requests start decoding one after another as their prefills finish; the window from the last
    first-token to the first last-token holds decode steps of the full batch only."""
    c = len(timings)
    lo = max(t.token_times[0] for t in timings)
    hi = min(t.token_times[-1] for t in timings)
    inside = sum(sum(1 for x in t.token_times if lo < x <= hi) for t in timings)
    steps = inside / c
    if hi <= lo or steps < 8:
        return None
    mid = (lo + hi) / 2
    kv = sum(t.prompt_tokens + sum(1 for x in t.token_times if x <= mid) for t in timings)
    shape = BatchShape(c, c, c, kv, 0)
    return Observation("window", (hi - lo) / steps, [(shape, 1.0)], note=f"c={c} steps={steps:.0f}")


async def _counters(url: str) -> engine_metrics.Counters | None:
    await asyncio.sleep(0.05)  # the frontend records a request's stats just after its last chunk
    return await asyncio.to_thread(engine_metrics.read_counters, url)


def _fastest_obs(obs: list[Observation]) -> Observation | None:
    """The fastest repeat: on a shared host other tenants only ever add time (a median of three still
    took in contention: fitted on a loaded 2-core machine, it made small-batch decode steps ~19% slow)."""
    good = [o for o in obs if math.isfinite(o.seconds)]
    return min(good, key=lambda o: o.seconds) if good else None


def overhead_line(samples: list[tuple[int, float]]) -> tuple[float, float]:
    """(fixed s, s per prompt token) of the request overhead from (prompt tokens, overhead) samples:
    the fastest repeat per prompt length (contention only adds), then a least-squares line, both
    terms >= 0. A long prompt costs more to parse and hand to the engine core."""
    from scipy.optimize import lsq_linear

    best: dict[int, float] = {}
    for p, s in samples:
        best[p] = min(s, best.get(p, math.inf))
    if len(best) < 2:
        return max(0.0, min(best.values())), 0.0
    ps = np.array(sorted(best), dtype=float)
    ys = np.array([best[int(p)] for p in ps])
    scale = np.array([1.0, 1.0 / ps.max()])  # columns of similar size for the solver
    sol = lsq_linear(np.column_stack([np.ones_like(ps), ps]) * scale, ys, bounds=(0.0, np.inf))
    fixed, per_token = sol.x * scale
    return float(fixed), float(per_token)


async def run_probes(
    url: str, model: str, plan: ProbePlan, seed: int = 0, log: Log = print
) -> tuple[list[Observation], tuple[float, float] | None]:
    """Observations, and the request overhead (fixed, per prompt token) when the engine clock let us
    measure it directly."""
    rng = random.Random(seed)
    obs: list[Observation] = []
    overheads: list[tuple[int, float]] = []  # (prompt tokens, TTFT - prefill) per repeat
    budget = plan.max_num_batched_tokens
    async with client_session() as client:
        await _batch(client, url, model, rng, 2, 16, 8)  # warm-up: first requests pay one-off costs
        engine_clock = await _counters(url) is not None
        log(f"measuring with the {'engine (vLLM /metrics)' if engine_clock else 'client'} clock")
        for p in plan.prefill_prompts:
            reps = []
            for _ in range(plan.repeats):
                before = await _counters(url) if engine_clock else None
                try:
                    (t,) = await _batch(client, url, model, rng, 1, p, 2)
                except ProbeFailed as e:
                    log(f"skipped a repeat: {e}")
                    continue
                if before is not None and (after := await _counters(url)) is not None:
                    prefill, _ = engine_metrics.mean_delta(before, after, engine_metrics.PREFILL)
                    overheads.append((p, t.ttft - prefill))
                    reps.append(Observation("prefill", prefill, prefill_terms(p, budget), note=f"p={p}"))
                else:
                    reps.append(Observation("ttft", t.ttft, prefill_terms(p, budget), api=1.0, note=f"p={p}"))
            if not reps:
                raise ProbeFailed(f"every repeat of the prefill probe p={p} failed")
            if (best := _fastest_obs(reps)) is not None:
                obs.append(best)
                log(f"prefill p={p}: {best.kind} {best.seconds * 1e3:.2f} ms")
        for c in (x for x in plan.concurrency if x <= plan.max_num_seqs):
            for p in plan.decode_prompts:
                for d in plan.decode_outputs:
                    # Client clock: ask for enough tokens that the all-decoding window still holds d steps.
                    extra = 0 if engine_clock else math.ceil(c * p / budget) + c // 8 + 4
                    reps = []
                    for _ in range(plan.repeats):
                        before = await _counters(url) if engine_clock else None
                        try:
                            timings = await _batch(client, url, model, rng, c, p, d + extra)
                        except ProbeFailed as e:
                            log(f"skipped a repeat: {e}")
                            continue
                        if before is not None and (after := await _counters(url)) is not None:
                            itl, n = engine_metrics.mean_delta(before, after, engine_metrics.ITL)
                            note = f"c={c} p={p} d={d} n={n}"
                            reps.append(Observation("itl", itl, itl_terms(c, p, d, plan), note=note))
                        elif (w := decode_window(timings)) is not None:
                            reps.append(w)
                        else:
                            reps.append(Observation("window", math.nan))  # too short to measure
                    if not reps:
                        raise ProbeFailed(f"every repeat of the decode probe c={c} p={p} d={d} failed")
                    if (best := _fastest_obs(reps)) is not None:
                        obs.append(best)
                        log(f"decode c={c} p={p} d={d}: {best.kind} {best.seconds * 1e3:.2f} ms")
    return obs, overhead_line(overheads) if overheads else None


# -- fitting ------------------------------------------------------------------------------------------


def knots_for(plan: ProbePlan) -> list[int]:
    """Knots only where a single-chunk prefill probe pins linear() down (free knots between data points
    overfit), plus the chunk budget itself."""
    top = plan.max_num_batched_tokens
    probed = [p for p in plan.prefill_prompts if plan.flat_tokens < p < top]
    return sorted({1, plan.flat_tokens, *probed, top})


def _hat(xs: list[int], n: int) -> np.ndarray:
    """Weights of each knot value in Profile.linear_time(n) (flat below, extrapolated above)."""
    w = np.zeros(len(xs))
    if n <= xs[0]:
        w[0] = 1.0
        return w
    i = min(int(np.searchsorted(xs, n)), len(xs) - 1)
    x0, x1 = xs[i - 1], xs[i]
    f = (n - x0) / (x1 - x0)
    w[i - 1], w[i] = 1.0 - f, f
    return w


def design_row(o: Observation, xs: list[int]) -> np.ndarray:
    """[overhead, per_seq, decode_kv, prefill_pair, request_overhead, knot values...]."""
    row = np.zeros(5 + len(xs))
    for s, w in o.terms:
        row[:4] += w * np.array([1.0, s.num_seqs, s.kv_tokens_read, s.prefill_attention_pairs])
        row[5:] += w * _hat(xs, s.num_tokens)
    row[4] = o.api
    return row


def fit(
    observations: list[Observation],
    plan: ProbePlan,
    name: str,
    model: str,
    hardware: str,
    request_overhead_s: float | None = None,
    request_overhead_per_token_s: float = 0.0,
) -> FitResult:
    from scipy.optimize import lsq_linear

    xs = knots_for(plan)
    a = np.array([design_row(o, xs) for o in observations])
    b = np.array([o.seconds for o in observations])
    if request_overhead_s is not None:  # measured directly: not a free parameter
        b = b - a[:, 4] * request_overhead_s
        a[:, 4] = 0.0
    # Knots at or below flat_tokens are pinned to zero (see module docstring): drop their columns.
    free = [True] * 4 + [request_overhead_s is None] + [x > plan.flat_tokens for x in xs]
    cols = np.flatnonzero(free)
    scale = 1.0 / np.asarray([o.seconds for o in observations])  # relative errors
    m = a[:, cols] * scale[:, None]
    col_norm = np.maximum(np.abs(m).max(axis=0), 1e-30)
    sol = lsq_linear(m / col_norm, b * scale, bounds=(0.0, np.inf))
    theta = np.zeros(a.shape[1])
    theta[cols] = sol.x / col_norm
    overhead = request_overhead_s if request_overhead_s is not None else float(theta[4])
    rel = [float(x) for x in (a @ theta - b) / b]
    rms = math.sqrt(float(np.mean(np.square(rel))))
    profile = Profile(
        name=name,
        model=model,
        gpu=hardware,
        description=f"Fitted by `block profile fit` from {len(observations)} probe observations "
        f"(RMS relative error {rms:.1%}).",
        sources=("block.realengine.profile_fit probes",),
        assumptions=(
            f"non-attention layers flat (zero extra) up to {plan.flat_tokens} tokens",
            f"request overhead outside engine steps (HTTP, tokenising): {overhead * 1e3:.3f} ms per request"
            f" + {request_overhead_per_token_s * 1e6:.3f} us per prompt token",
        ),
        engine_defaults={
            "max_num_seqs": plan.max_num_seqs,
            "max_num_batched_tokens": plan.max_num_batched_tokens,
        },
        step_overhead_s=float(theta[0]),
        per_seq_s=float(theta[1]),
        decode_kv_token_s=float(theta[2]),
        prefill_pair_s=float(theta[3]),
        linear_knots_tokens=tuple(xs),
        linear_knots_s=tuple(float(v) for v in theta[5:]),
        request_overhead_s=max(0.0, overhead),
        request_overhead_per_token_s=max(0.0, request_overhead_per_token_s),
    )
    return FitResult(profile, overhead, observations, rel)


# -- the engine's own numbers -------------------------------------------------------------------------


def engine_cache_config(url: str) -> dict[str, int]:
    """block_size and num_gpu_blocks from vLLM's /metrics (vllm:cache_config_info), when it has them."""
    try:
        text = httpx.get(url.rstrip("/") + "/metrics", timeout=5.0).text
    except httpx.HTTPError:
        return {}
    line = next((ln for ln in text.splitlines() if ln.startswith("vllm:cache_config_info{")), "")
    labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
    return {k: int(labels[k]) for k in ("block_size", "num_gpu_blocks") if labels.get(k, "").isdigit()}


def first_model(url: str) -> str:
    data = httpx.get(url.rstrip("/") + "/v1/models", timeout=5.0).json()
    return data["data"][0]["id"]


def fit_engine(
    url: str,
    plan: ProbePlan,
    name: str = "fitted",
    model: str | None = None,
    hardware: str = "unknown",
    max_model_len: int = 4096,
    seed: int = 0,
    log: Log = print,
) -> FitResult:
    """Probe the engine at `url` and fit a profile; engine_defaults carry its cache geometry."""
    model = model or first_model(url)
    obs, overhead = asyncio.run(run_probes(url, model, plan, seed, log))
    if not obs:
        raise RuntimeError("no usable probe observations")
    fixed, per_token = overhead if overhead is not None else (None, 0.0)
    result = fit(obs, plan, name, model, hardware, fixed, per_token)
    defaults = {**result.profile.engine_defaults, **engine_cache_config(url), "max_model_len": max_model_len}
    result.profile = replace(result.profile, engine_defaults=defaults)
    return result
