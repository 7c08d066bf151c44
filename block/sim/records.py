"""Per-request results of a simulation, as the benchmark client records them live."""

from __future__ import annotations

from block.bench.record import RequestRecord
from block.replica import Request


def build_records(
    reqs: list[Request | None],
    instance_of: list[int],
    prompts: list[int],
    outputs: list[int],
    arrivals: list[float],
    instance_ids: list[str],
    token_times: dict[Request, list[float]] | None,
) -> list[RequestRecord]:
    """One RequestRecord per request; `None` in `reqs` marks a request the engine rejected.

    A simulated request is sent the moment it arrives (no client lag) and streams one event per token;
    `chunks` stays 0 because there is no client parsing anything.
    """
    out = []
    for i, q in enumerate(reqs):
        a = arrivals[i]
        rec = RequestRecord(
            index=i, prompt_tokens=prompts[i], expected_output_tokens=outputs[i], scheduled_s=a, sent_s=a
        )
        if q is None:
            rec.status, rec.error = 400, "prompt + output tokens exceed max_model_len or the KV cache"
        elif q.finish_time is None or q.first_token_time is None:
            rec.status, rec.error = 200, "unfinished"  # cannot happen: the loop drains every replica
        else:
            rec.status, rec.instance = 200, instance_ids[instance_of[i]]
            rec.output_tokens = q.num_generated
            rec.ttft_s = q.first_token_time - a
            rec.e2e_s = q.finish_time - a
            if token_times is not None:
                tt = token_times[q]
                rec.itl_s = [b - c for b, c in zip(tt[1:], tt, strict=False)]
        out.append(rec)
    return out
