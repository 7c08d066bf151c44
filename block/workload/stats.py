"""What a workload looks like to a prefix cache: sessions, turns, history and reusable prompt tokens."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from block.workload.reuse import reusable_share
from block.workload.sample import Sample


def workload_stats(samples: Sequence[Sample]) -> dict[str, Any]:
    """Counts and shares of a workload (in list order, as it is replayed).

    - `history_share`: of all prompt tokens, those a turn resends from its session's previous turn (that
      turn's prompt and its recorded answer); 0 without sessions;
    - `reusable_share`: of all prompt tokens, those in leading blocks an earlier request already had (an
      infinite cache on one instance: the hit rate no policy can beat). Smaller than the history share
      because an engine replaying recorded answers generates other tokens, so answers are never hits.
    """
    prompts = np.array([s.prompt_tokens for s in samples], dtype=np.int64)
    outputs = np.array([s.output_tokens for s in samples], dtype=np.int64)
    sessions = {s.session for s in samples if s.session is not None}
    history = 0
    previous: dict[int, Sample] = {}
    for s in samples:
        if s.session is None:
            continue
        before = previous.get(s.session)
        if before is not None:
            history += min(s.prompt_tokens, before.prompt_tokens + before.output_tokens)
        previous[s.session] = s
    total = int(prompts.sum())
    return {
        "requests": len(samples),
        "sessions": len(sessions),
        "turns_per_session": len([s for s in samples if s.session is not None]) / len(sessions)
        if sessions
        else 0.0,
        "mean_prompt_tokens": float(prompts.mean()) if len(samples) else 0.0,
        "mean_output_tokens": float(outputs.mean()) if len(samples) else 0.0,
        "with_prefix_hashes": sum(1 for s in samples if s.prefix_hashes),
        "history_share": history / total if total else 0.0,
        "reusable_share": reusable_share(samples),
    }
