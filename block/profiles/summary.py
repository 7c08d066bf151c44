"""The headline numbers of a profile: decode step time by batch and time to prefill a prompt alone.

Used by `block profile show` and by the sanity tests, so both quote the same definitions.
"""

from __future__ import annotations

from dataclasses import dataclass

from block.profiles.profile import Profile

DECODE_BATCHES = (1, 8, 32, 48)
PREFILL_PROMPTS = (512, 2048)
# Every decoding sequence is assumed to hold this many tokens of context (prompt + output so far).
DEFAULT_CONTEXT = 1024


@dataclass(frozen=True)
class DecodeRow:
    batch: int
    step_s: float

    @property
    def tokens_per_s(self) -> float:
        return self.batch / self.step_s


@dataclass(frozen=True)
class PrefillRow:
    prompt_tokens: int
    chunk: int
    seconds: float


@dataclass(frozen=True)
class ProfileSummary:
    profile: Profile
    context: int
    decode: tuple[DecodeRow, ...]
    prefill: tuple[PrefillRow, ...]

    def to_dict(self) -> dict[str, object]:
        p = self.profile
        return {
            "name": p.name,
            "model": p.model,
            "gpu": p.gpu,
            "description": p.description,
            "context_tokens_per_seq": self.context,
            "decode_step_ms": {str(r.batch): round(r.step_s * 1e3, 3) for r in self.decode},
            "decode_tokens_per_s": {str(r.batch): round(r.tokens_per_s, 1) for r in self.decode},
            "prefill_ms": {str(r.prompt_tokens): round(r.seconds * 1e3, 3) for r in self.prefill},
            "prefill_chunk_tokens": self.prefill[0].chunk if self.prefill else None,
            "engine_defaults": dict(p.engine_defaults),
            "sources": list(p.sources),
            "assumptions": list(p.assumptions),
        }


def prefill_chunk(profile: Profile, prompt_tokens: int) -> int:
    """The profile's chunked-prefill budget, or the whole prompt when it names none."""
    return profile.engine_defaults.get("max_num_batched_tokens", prompt_tokens)


def summarize(profile: Profile, context: int = DEFAULT_CONTEXT) -> ProfileSummary:
    decode = tuple(DecodeRow(b, profile.decode_step_time(b, b * context)) for b in DECODE_BATCHES)
    prefill = tuple(
        PrefillRow(n, prefill_chunk(profile, n), profile.prefill_time(n, prefill_chunk(profile, n)))
        for n in PREFILL_PROMPTS
    )
    return ProfileSummary(profile, context, decode, prefill)
