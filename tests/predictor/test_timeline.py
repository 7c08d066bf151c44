"""A forecast read off the recorded run without a candidate (block/predictor/timeline.py) is the replay
from the checkpoint: same times to float rounding, same step count; where it cannot be read (a
preemption, a step without budget for it, too few blocks) it says None, and the forecaster replays."""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from block.predictor.bench import busy_snapshot
from block.predictor.checkpoint import Checkpoint
from block.predictor.floor import MARGIN, step_floor
from block.predictor.forecast import REPLAYS_BEFORE_RECORDING, Forecaster
from block.predictor.timeline import Timeline
from block.profiles.profile import load_profile
from block.replica import RequestState, Snapshot
from block.replica.fast_replica import SimRequest, SimulationStuck
from block.request import RoutingRequest
from tests.predictor.strategies import PROFILE, odd_snapshots, reached_snapshots

REL = 1e-9  # float rounding: the timeline sums the same step times in another order


def replay(cp: Checkpoint, snapshot: Snapshot, profile, prompt: int, out: int) -> tuple[SimRequest, int]:
    """The candidate queued last at the checkpoint, run step by step: (it, steps)."""
    sim = cp.replica(snapshot.config, profile)
    cand = SimRequest("cand", prompt, out, watched=True)
    sim.add_waiting(cand)
    sim.run_until_watched_done()
    return cand, sim.steps


def check(snapshot: Snapshot, profile, prompt: int, out: int) -> bool:
    """Compare the timeline's read with the replay; True when it could be read."""
    cfg = snapshot.config
    cap = min(cfg.max_model_len, cfg.num_gpu_blocks * cfg.block_size)
    prompt = max(1, min(prompt, cap - 1))
    out = max(1, min(out, cap - prompt))
    cp = Forecaster(snapshot, profile).checkpoint()
    assert cp is not None
    try:
        sim = cp.replica(cfg, profile)
        sim.record = []
        timeline = Timeline(sim, cp.valid_from, 0, cp.preemptions)
        cand, steps = replay(cp, snapshot, profile, prompt, out)
    except SimulationStuck:
        return False
    read = timeline.forecast(prompt, out, cp.at)
    if read is None:
        return False
    for got, want in zip(read[:3], (cand.first_sched, cand.first_token, cand.finish), strict=True):
        assert want is not None
        assert abs(got - want) <= REL * max(1.0, abs(want)), (read, cand.finish)
    assert read[3:] == (steps, cand.preemptions)
    return True


def same_forecast(got, want) -> None:
    """The same forecast, to float rounding (a read sums the replay's step times in another order)."""
    for name in ("e2e_s", "ttft_s", "queue_delay_s"):
        x, y = getattr(got, name), getattr(want, name)
        assert abs(x - y) <= REL * max(1.0, abs(y)), (name, x, y)
    assert (got.steps, got.output_tokens, got.preemptions) == (
        want.steps,
        want.output_tokens,
        want.preemptions,
    )


def no_caching(snapshot: Snapshot) -> Snapshot:
    return replace(snapshot, config=replace(snapshot.config, enable_prefix_caching=False))


# the test profile and calibrated views of it (each phase scaled its own way)
profiles = st.sampled_from([PROFILE, PROFILE.scaled(0.5, 0.7), PROFILE.scaled(1.6, 0.4)])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    snapshot=st.one_of(reached_snapshots(), odd_snapshots()),
    profile=profiles,
    prompt=st.integers(1, 300),
    out=st.integers(1, 200),
)
def test_a_read_is_the_replay(snapshot: Snapshot, profile, prompt: int, out: int) -> None:
    check(no_caching(snapshot), profile, prompt, out)


def test_busy_engines_are_mostly_read_and_match() -> None:
    """Paper-like busy A30 states (48 running, queues, the KV cache 95% used): every read matches the
    replay, the candidate's own preemptions included, and nearly every candidate can be read."""
    profile = load_profile("llama-2-7b-a30")
    rng = random.Random(0)
    read = total = 0
    for i in range(12):
        snapshot = busy_snapshot(profile, 48, rng.randint(0, 120), seed=i)
        for _ in range(8):
            prompt = max(4, min(int(rng.expovariate(1 / 512)), 2000))
            out = max(2, min(int(rng.expovariate(1 / 256)), 1500))
            read += check(snapshot, profile, prompt, out)
            total += 1
    assert read >= total * 9 // 10, (read, total)


def test_the_forecaster_reads_a_state_asked_again() -> None:
    """A state records its run once REPLAYS_BEFORE_RECORDING forecasts were replayed, or at its first
    where its checkpoint is built (a fleet's walk reached it); the reads give what a replay gives."""
    profile = load_profile("llama-2-7b-a30")
    snapshot = busy_snapshot(profile, 48, 40, seed=3)
    asked, prepared = Forecaster(snapshot, profile), Forecaster(snapshot, profile)
    prepared.checkpoint()
    rng = random.Random(1)
    for k in range(12):
        request = RoutingRequest(rng.randint(16, 600), rng.randint(8, 300))
        sent = rng.choice([0.0, 0.5, 5.0, 30.0])  # before the checkpoint and after it
        want = Forecaster(snapshot, profile).forecast(request, sent)  # a fresh state: replayed
        for fc in (asked, prepared):
            got = fc.forecast(request, sent)
            for name in ("e2e_s", "ttft_s", "queue_delay_s"):
                assert abs(getattr(got, name) - getattr(want, name)) <= REL * max(1.0, getattr(want, name))
            assert got.steps == want.steps
        assert prepared._timeline is not None
        assert (asked._timeline is not None) == (k >= REPLAYS_BEFORE_RECORDING)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    snapshot=st.one_of(reached_snapshots(caching=True), odd_snapshots(caching=True)),
    shapes=st.lists(
        st.tuples(st.integers(1, 300), st.integers(1, 200), st.booleans()), min_size=3, max_size=6
    ),
)
def test_with_the_cache_modelled_a_state_asked_again_forecasts_as_a_fresh_one(
    snapshot: Snapshot, shapes: list[tuple[int, int, bool]]
) -> None:
    """With the prefix cache modelled, a candidate that cannot hit is read off the timeline of the run
    without the cache model (from the state's second such forecast): the same forecast as a fresh
    forecaster's replay with the cache model."""
    cfg = snapshot.config
    cap = min(cfg.max_model_len, cfg.num_gpu_blocks * cfg.block_size) - 1
    asked = Forecaster(snapshot, PROFILE)
    for k, (prompt, out, named) in enumerate(shapes):
        prompt = max(1, min(prompt, cap))
        # a prompt of its own (nothing on the instance names it), or one without an identity
        hashes = tuple(10**12 + 1_000 * k + i for i in range(prompt // cfg.block_size)) if named else ()
        request = RoutingRequest(prompt, out, prefix_hashes=hashes, prefix_block_size=cfg.block_size)
        try:
            want = Forecaster(snapshot, PROFILE).forecast(request)
        except SimulationStuck:
            return
        got = asked.forecast(request)
        same_forecast(got, want)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    snapshot=st.one_of(reached_snapshots(), odd_snapshots()),
    shapes=st.lists(
        st.tuples(st.integers(1, 300), st.integers(1, 200), st.one_of(st.just(0.0), st.floats(1e-4, 30.0))),
        min_size=3,
        max_size=6,
    ),
    pending=st.lists(st.tuples(st.integers(1, 120), st.integers(1, 80), st.floats(0.0, 0.05)), max_size=3),
    in_flight=st.one_of(st.none(), st.floats(1e-4, 0.05)),
    profile=profiles,
    checkpointed=st.booleans(),
)
def test_a_state_asked_again_forecasts_as_a_fresh_one(
    snapshot: Snapshot,
    shapes: list[tuple[int, int, float]],
    pending: list[tuple[int, int, float]],
    in_flight: float | None,
    profile,
    checkpointed: bool,
) -> None:
    """From the second forecast of a state on (the first, where its checkpoint is built), forecasts are
    read off the run recorded from the snapshot or from the checkpoint (candidates sent at any time after
    the last pending request, before the checkpoint or after it, a step in flight at the snapshot): the
    same as a fresh forecaster's replay."""
    snapshot = no_caching(snapshot)
    cfg = snapshot.config
    cap = min(cfg.max_model_len, cfg.num_gpu_blocks * cfg.block_size) - 1
    routed = [
        RequestState(f"p{i}", snapshot.now, max(1, min(p, cap)), expected_output_tokens=o)
        for i, (p, o, _) in enumerate(pending)
    ]
    args = dict(pending=routed, pending_at=[t for _, _, t in pending])
    step_end = None if in_flight is None else snapshot.now + in_flight
    asked = Forecaster(snapshot, profile, step_end=step_end, **args)  # type: ignore[arg-type]
    if checkpointed:
        try:
            asked.checkpoint()
        except SimulationStuck:
            return
    for prompt, out, elapsed in shapes:
        request = RoutingRequest(max(1, min(prompt, cap)), out)
        try:
            want = Forecaster(snapshot, profile, step_end=step_end, **args).forecast(request, elapsed)  # type: ignore[arg-type]
        except SimulationStuck:
            return
        got = asked.forecast(request, elapsed)
        same_forecast(got, want)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    snapshot=st.one_of(reached_snapshots(), odd_snapshots()),
    profile=profiles,
    prompt=st.integers(1, 300),
    out=st.integers(1, 200),
    elapsed=st.one_of(st.just(0.0), st.floats(1e-4, 1.0)),
    later=st.one_of(st.just(0.0), st.floats(1e-4, 1.0)),
    in_flight=st.one_of(st.none(), st.floats(1e-4, 0.05)),
)
def test_the_recorded_floors_hold(snapshot, profile, prompt, out, elapsed, later, in_flight) -> None:
    """Bounds from the run recorded from the snapshot: the fleet's ready order (ready_s + own_s, for any
    candidate of at least that many steps of its own, sent then or later) and a walk's floor (the read
    itself) stay below the forecast; calibrated views of the profile included."""
    snapshot = no_caching(snapshot)
    cfg = snapshot.config
    cap = min(cfg.max_model_len, cfg.num_gpu_blocks * cfg.block_size) - 1
    step_end = None if in_flight is None else snapshot.now + in_flight
    request = RoutingRequest(max(1, min(prompt, cap)), out)
    steps = step_floor(profile, cfg)
    own_steps = steps.own_steps(request, cfg)
    prepared = Forecaster(snapshot, profile, step_end=step_end)
    try:
        ready, _ = prepared.ready_each(elapsed, sorted({1, max(1, own_steps // 2), own_steps}))
        sent = elapsed + later
        want = Forecaster(snapshot, profile, step_end=step_end).forecast(request, sent)
    except SimulationStuck:
        return
    for r in ready:
        assert (r + steps.own_s(request, cfg) - sent) * (1 - 2 * MARGIN) <= want.e2e_s
    floor = prepared.checkpoint_floor(request, sent, prepare=True)
    assert floor is None or floor <= want.e2e_s
