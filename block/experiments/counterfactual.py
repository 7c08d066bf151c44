"""What would have happened to a request on another instance: replay a copy of that instance forward.

The copy starts from the instance's exact state at the decision (not a snapshot: the truth), finishes the
step in flight, takes the request and runs with its own copy of the instance's noise stream until the
request completes. Requests routed there later are not added: it answers "had it gone there, with what
was there" - the question a forecast answers too, so disagreements are the forecast's errors plus noise.
"""

from __future__ import annotations

import copy

from block.replica import Request
from block.sim.simulator import Cluster


def replay_on(
    cluster: Cluster, r: int, prompt_tokens: int, output_tokens: int, now: float, noisy: bool = True
) -> tuple[float, float]:
    """(TTFT, E2E) of a request sent to instance r at `now`, from a copy of the instance. `noisy`:
    the instance's own step noise continues (what would have happened); else exact mean step times
    (what could be expected)."""
    memo = {id(cluster.profile): cluster.profile}  # immutable: share, do not copy
    rep, batch, noise = copy.deepcopy((cluster.replicas[r], cluster.inflight[r], cluster.noises[r]), memo)
    q = Request("\0counterfactual", prompt_tokens, output_tokens, now, output_tokens)
    rep.add(q)
    if batch is not None:
        rep.complete(batch, cluster.next_end[r])  # the step in flight: the request cannot join it
    else:
        rep.advance_to(now)
    apply = None if noise.is_exact or not noisy else noise.apply
    while not q.is_finished:
        if rep.step(apply) is None:
            raise RuntimeError("counterfactual replica went idle before the request finished")
    assert q.first_token_time is not None and q.finish_time is not None
    return q.first_token_time - now, q.finish_time - now
