"""A forecast started from the checkpoint (block/predictor/checkpoint.py) is the forecast replayed from
the snapshot: same times (to float rounding), same step counts; extending a checkpoint by a routed
request equals building it again; the checkpoint's floor stays under the forecast."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from block.predictor.bench import busy_snapshot
from block.predictor.forecast import Forecaster
from block.predictor.lengths import LengthRule
from block.replica import RequestState, Snapshot
from block.request import RoutingRequest
from tests.predictor.strategies import PROFILE, odd_snapshots, reached_snapshots

REL = 1e-9  # float rounding: the arrival splits a decode stretch that the checkpoint's run does not

candidates = st.builds(
    RoutingRequest, prompt_tokens=st.integers(1, 200), expected_output_tokens=st.integers(1, 150)
)
pendings = st.lists(st.tuples(st.integers(1, 120), st.integers(1, 80), st.floats(0.0, 0.05)), max_size=4)
rules = st.builds(LengthRule, default_output_tokens=st.integers(1, 100), overrun_tokens=st.integers(1, 20))
elapsed = st.one_of(st.just(0.0), st.floats(1e-4, 2.0))


def _fit(snapshot: Snapshot, prompt: int) -> int:
    cfg = snapshot.config
    return max(1, min(prompt, cfg.max_model_len - 1, cfg.num_gpu_blocks * cfg.block_size - 1))


def _pending(
    snapshot: Snapshot, shapes: list[tuple[int, int, float]]
) -> tuple[list[RequestState], list[float]]:
    states = [
        RequestState(f"p{i}", snapshot.now, _fit(snapshot, p), expected_output_tokens=o)
        for i, (p, o, _) in enumerate(shapes)
    ]
    return states, [t for _, _, t in shapes]


def _same(a, b) -> None:
    for k in ("e2e_s", "ttft_s", "queue_delay_s"):
        x, y = getattr(a, k), getattr(b, k)
        assert abs(x - y) <= REL * max(1.0, abs(x)), (k, x, y)
    # (not `events`, the steps simulated one by one: a forecast read off a recorded run simulates none)
    assert (a.steps, a.preemptions, a.output_tokens) == (b.steps, b.preemptions, b.output_tokens)


def check(snapshot: Snapshot, request: RoutingRequest, shapes, elapsed_s: float, rule: LengthRule) -> None:
    snapshot = replace(snapshot, config=replace(snapshot.config, enable_prefix_caching=False))
    request = replace(request, prompt_tokens=_fit(snapshot, request.prompt_tokens))
    pending, at = _pending(snapshot, shapes)
    fresh = Forecaster(snapshot, PROFILE, pending=pending, pending_at=at, rule=rule)
    replayed = fresh.forecast(request, elapsed_s)  # a first forecast replays from the snapshot
    assert fresh._checkpoint is None
    prepared = Forecaster(snapshot, PROFILE, pending=pending, pending_at=at, rule=rule)
    cp = prepared.checkpoint()
    assert cp is not None
    _same(replayed, prepared.forecast(request, elapsed_s))
    used = cp.covers(elapsed_s)
    floor = prepared.checkpoint_floor(request, elapsed_s)
    assert floor is not None or not used  # (a state with a recorded run is bounded by a read off it too)
    if floor is not None:
        assert floor <= replayed.e2e_s
        assert prepared.floor.e2e_s(request, elapsed_s) <= replayed.e2e_s

    # one more request routed: the checkpoint extended equals one built from the snapshot
    routed_at = max(at, default=0.0) + elapsed_s / 2
    more = RequestState(
        "routed", snapshot.now, _fit(snapshot, request.prompt_tokens + 7), expected_output_tokens=9
    )
    args = dict(pending=[*pending, more], pending_at=[*at, routed_at], rule=rule)
    chained = Forecaster(snapshot, PROFILE, previous=prepared, **args)  # type: ignore[arg-type]
    rebuilt = Forecaster(snapshot, PROFILE, **args)  # type: ignore[arg-type]
    # queued at the snapshot, it would go ahead of pending requests that arrive later: not an extension
    assert (chained._extends is not None) == (routed_at > 0 or all(t <= 0 for t in at))
    a, b = chained.checkpoint(), rebuilt.checkpoint()
    assert a is not None and b is not None
    assert (a.running, a.waiting, a.steps, a.events, a.valid_from) == (
        b.running,
        b.waiting,
        b.steps,
        b.events,
        b.valid_from,
    )
    assert abs(a.at - b.at) <= REL * max(1.0, b.at)
    later = routed_at + elapsed_s
    _same(chained.forecast(request, later), Forecaster(snapshot, PROFILE, **args).forecast(request, later))  # type: ignore[arg-type]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reached_snapshots(), candidates, pendings, elapsed, rules)
def test_reached_states(snapshot, request, shapes, elapsed_s, rule):
    check(snapshot, request, shapes, elapsed_s, rule)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(odd_snapshots(), candidates, pendings, elapsed, rules)
def test_odd_states(snapshot, request, shapes, elapsed_s, rule):
    check(snapshot, request, shapes, elapsed_s, rule)


def test_deep_queue_forecast_starts_at_the_checkpoint():
    """48 running + 200 waiting: the prepared forecast replays only the candidate's own part."""
    snap = busy_snapshot(PROFILE, 48, 200, seed=1)
    request = RoutingRequest(512, 256)
    replayed = Forecaster(snap, PROFILE).forecast(request, 0.01)
    prepared = Forecaster(snap, PROFILE)
    cp = prepared.checkpoint()
    assert cp is not None and cp.at > 0.5 * replayed.queue_delay_s  # most of the wait is behind it
    _same(replayed, prepared.forecast(request, 0.01))
    assert prepared.checkpoint_floor(request, 0.01) > prepared.floor.e2e_s(request, 0.01)
