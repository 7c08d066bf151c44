"""The reference forecast: the replica model itself, stepped token by token.

Slow but obviously right. The fast forecast must agree with it (property tests) and the benchmark
reports both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from block.predictor.forecast import ANTICIPATED, CANDIDATE, Arrivals
from block.predictor.lengths import LengthRule, max_output
from block.profiles.profile import Profile
from block.replica import Replica, ReplicaConfig, Request
from block.replica.prefix_cache import prompt_hashes
from block.replica.snapshot import RequestState, Snapshot
from block.request import RoutingRequest


@dataclass(slots=True)
class StepwiseRun:
    candidate: Request | None
    finish: dict[str, float]  # request id -> finish time, relative to the snapshot
    arrival: float


def build_replica(
    snapshot: Snapshot, profile: Profile, pending: Sequence[RequestState] = (), rule: LengthRule | None = None
) -> Replica:
    rule = rule or LengthRule()
    cfg = snapshot.config
    replica = Replica.from_snapshot(snapshot, profile, lambda s: rule.total_output(s, cfg))
    for s in pending:
        replica.waiting.append(
            Request(
                s.id,
                s.prompt_tokens,
                rule.total_output(s, cfg),
                s.arrival_time,
                s.expected_output_tokens,
                prefix_hashes=_hashes(s.prefix_hashes, s.prompt_tokens, cfg),
            )
        )
    return replica


def run_stepwise(
    snapshot: Snapshot,
    request: RoutingRequest | None,
    profile: Profile,
    *,
    pending: Sequence[RequestState] = (),
    elapsed_s: float = 0.0,
    rule: LengthRule | None = None,
    drain: bool = False,
    arrivals: Arrivals | None = None,
) -> StepwiseRun:
    """Run until the candidate finishes (or everything, with `drain` or without a candidate).
    `arrivals`: synthetic requests queued every 1 / rate after the candidate until it finishes,
    each before the first step that starts at or after its arrival (see forecast.Arrivals)."""
    replica = build_replica(snapshot, profile, pending, rule)
    everyone = list(replica.running) + list(replica.waiting)
    t0 = snapshot.now
    arrival = t0 + max(0.0, elapsed_s)
    cand = None
    if request is not None:
        while replica.has_work and replica.now < arrival:
            if replica.step() is None:
                break
        replica.advance_to(arrival)
        out = max(1, min(request.expected_output_tokens, max_output(request.prompt_tokens, snapshot.config)))
        if request.max_tokens is not None:
            out = max(1, min(out, request.max_tokens))
        cand = Request(CANDIDATE, request.prompt_tokens, out, arrival_time=arrival)
        if request.prefix_block_size == snapshot.config.block_size:
            cand.prefix_hashes = request.prefix_hashes  # Replica.add keeps the prompt's
        replica.add(cand)
        if arrivals is not None and arrivals.active:
            _run_with_arrivals(replica, cand, arrivals)
        while not cand.is_finished:
            replica.step()
    if drain or cand is None:
        while replica.has_work:
            if replica.step() is None:
                break
    finish = {r.id: r.finish_time - t0 for r in everyone if r.finish_time is not None}
    return StepwiseRun(cand, finish, arrival - t0)


def _run_with_arrivals(replica: Replica, cand: Request, arrivals: Arrivals) -> None:
    prompt, output = arrivals.sized_for(replica.config)
    k = 1
    while not cand.is_finished:
        due = cand.arrival_time + k / arrivals.rate
        while not cand.is_finished and replica.now < due:
            replica.step()
        if not cand.is_finished:
            replica.advance_to(due)
            replica.add(Request(f"{ANTICIPATED}{k}", prompt, output, arrival_time=due))
            k += 1


def _hashes(hashes: tuple[int, ...], prompt_tokens: int, config: ReplicaConfig) -> tuple[int, ...]:
    return prompt_hashes(hashes, prompt_tokens, config.block_size) if config.enable_prefix_caching else ()
