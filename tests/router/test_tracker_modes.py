"""A tracker without a profile counts exactly as one with it: the policies that read counts (llumnix,
infaas, least-requests, min-qpm) see the same numbers whether or not a profile is configured."""

from __future__ import annotations

from block.fleet.tracker import router_tracker
from block.policies import RoutingRequest
from block.policies.heuristics import Infaas, LeastRequests, Llumnix, MinQPM
from block.profiles import load_profile
from block.replica import ReplicaConfig, Snapshot
from block.replica.snapshot import RequestState

PROFILE = load_profile("llama-2-7b-a30")
CONFIG = ReplicaConfig(num_gpu_blocks=400, block_size=16)
VIEW = (
    "running",
    "waiting",
    "in_flight",
    "free_blocks",
    "num_gpu_blocks",
    "block_size",
    "waiting_prompt_tokens",
)


def snapshot(i: int) -> Snapshot:
    running = [RequestState(f"run{i}-{k}", 0.0, 300 + k, 300 + k, 5 + k, 200) for k in range(3)]
    waiting = [
        RequestState(f"new{i}", 0.1, 700, 0, 0, 100),
        # preempted: it recomputes its prompt and the 40 tokens it had generated
        RequestState(f"preempted{i}", 0.0, 500, 0, 40, 120),
        RequestState(f"chunked{i}", 0.2, 900, 512, 0, 50),
    ]
    return Snapshot(CONFIG, 1.0, running, waiting, free_blocks=300 - 10 * i)


def view(tracker: object) -> tuple[int, ...]:
    return tuple(getattr(tracker, name) for name in VIEW) + (tracker.routed_in_last(60.0, 5.0),)  # type: ignore[attr-defined]


def test_counts_agree_with_and_without_a_profile() -> None:
    with_profile = router_tracker("a", PROFILE, CONFIG, 256)
    without = router_tracker("b", None, CONFIG, 256)
    for t in (with_profile, without):
        t.observe(snapshot(0), at=1.0)
    assert view(with_profile) == view(without)
    # the preempted request's recompute counts: 700 + (500 + 40) + (900 - 512)
    assert without.waiting_prompt_tokens == 700 + 540 + 388

    for t in (with_profile, without):
        t.on_routed(RoutingRequest(1000, 50, id="x"), 1.5)
        t.on_routed(RoutingRequest(64, 50, id="y"), 1.6)
        t.on_finished("y", at=1.7)
        t.on_finished("new0", at=1.8)  # finished while still in the snapshot
    assert view(with_profile) == view(without)

    for t in (with_profile, without):
        t.observe(snapshot(1), at=2.0)
    assert view(with_profile) == view(without)
    # only the instance with a profile forecasts
    assert with_profile.predict(RoutingRequest(100, 20), 2.1) is not None
    assert without.predict(RoutingRequest(100, 20), 2.1) is None


def test_count_policies_choose_the_same_with_and_without_a_profile() -> None:
    def fleet(profile: object) -> list:
        trackers = [router_tracker(f"i{k}", profile, CONFIG, 256) for k in range(4)]  # type: ignore[arg-type]
        for k, t in enumerate(trackers):
            t.observe(snapshot(k), at=1.0)
            for j in range(k % 3):
                t.on_routed(RoutingRequest(400 * (j + 1), 50, id=f"r{k}-{j}"), 1.2)
        return trackers

    request = RoutingRequest(300, 100)
    for policy in (Llumnix(), Infaas(), LeastRequests(), MinQPM()):
        a = policy.choose(request, fleet(PROFILE), 3.0)
        b = policy.choose(request, fleet(None), 3.0)
        assert a.instance.id == b.instance.id, policy.name
