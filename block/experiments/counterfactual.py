"""What would have happened to a request on another instance? Two answers.

`replay_on` replays a copy of that one instance forward: it starts from the instance's exact state at the
decision (not a snapshot: the truth), finishes the step in flight, takes the request and runs with its own
copy of the instance's noise stream until the request completes. Requests routed there later are not
added: it answers "had it gone there, with what was there" - the question a forecast answers too, so
disagreements are the forecast's errors plus noise.

`fork_on` answers "had it gone there, with everything that then happened": the whole cluster is
simulated again with the request pinned to that instance, later arrivals (routed by the policy, which sees
where the request went) included, as when the live benchmark sends a sampled request to every instance.
The simulation is deterministic, so the rerun is the original run up to the decision.
"""

from __future__ import annotations

import copy

import numpy as np

from block.replica import Request
from block.sim.config import SimConfig
from block.sim.requests import SimRequests
from block.sim.simulator import Cluster, simulate


def replay_on(
    cluster: Cluster, r: int, prompt_tokens: int, output_tokens: int, now: float, noisy: bool = True
) -> tuple[float, float]:
    """(TTFT, E2E) of a request sent to instance r at `now`, from a copy of the instance. `noisy`:
    the instance's own step noise continues (what would have happened); else exact mean step times
    (what could be expected)."""
    memo = {id(cluster.profiles[r]): cluster.profiles[r]}  # immutable: share, do not copy
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


def fork_on(
    config: SimConfig, requests: SimRequests, i: int, r: int, horizon_s: float = 30.0
) -> tuple[float, float]:
    """(TTFT, E2E) of request i had it been routed to replica r, everything else as it then happens.

    Requests arriving after request i finished cannot change it, so the rerun stops at the first arrival
    beyond `horizon_s` after it, and doubles the horizon while the request is still running by then."""
    arrivals = requests.arrival_s
    while True:
        cut = int(np.searchsorted(arrivals, arrivals[i] + horizon_s, side="right"))
        rec = simulate(config, requests.head(cut), pins={i: r}).records[i]
        if rec.ttft_s is None or rec.e2e_s is None:
            raise RuntimeError(f"request {i} was refused by replica {r}: {rec.error}")
        if cut == len(requests) or arrivals[i] + rec.e2e_s <= arrivals[cut]:
            return rec.ttft_s, rec.e2e_s
        horizon_s *= 2
