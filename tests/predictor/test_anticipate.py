"""Anticipated arrivals (opt-in): synthetic requests after the candidate slow its decode steps."""

from __future__ import annotations

from block.policies.base import RoutingRequest
from block.predictor.forecast import Arrivals, Forecaster
from block.predictor.tracker import InstanceTracker
from block.replica import ReplicaConfig, RequestState, Snapshot

CFG = ReplicaConfig(
    max_num_seqs=8, max_num_batched_tokens=64, block_size=16, num_gpu_blocks=64, max_model_len=512
)


def busy() -> Snapshot:
    running = [RequestState(f"r{i}", 0.0, 20, 20 + i, i, 60) for i in range(1, 4)]
    return Snapshot(
        CFG, 0.0, running=running, waiting=[RequestState("w", 0.0, 30, expected_output_tokens=40)]
    )


def test_arrivals_raise_e2e_and_a_zero_rate_changes_nothing(profile) -> None:
    fc = Forecaster(busy(), profile)
    request = RoutingRequest(40, 50)
    plain = fc.forecast(request, 0.01, added_delay="horizon")
    same = fc.forecast(request, 0.01, added_delay="horizon", arrivals=Arrivals(0.0, 30, 40))
    assert same == plain
    more = fc.forecast(request, 0.01, added_delay="horizon", arrivals=Arrivals(50.0, 30, 40))
    assert more.e2e_s > plain.e2e_s
    assert more.added_delay_s == plain.added_delay_s  # the harm is measured without them
    assert more.output_tokens == plain.output_tokens


def test_tracker_anticipates_only_when_asked(profile) -> None:
    request = RoutingRequest(40, 50)
    e2e = []
    for on in (False, True):
        t = InstanceTracker(
            "i", profile, CFG, added_delay="none", anticipate_arrivals=on, anticipate_window_s=1.0
        )
        t.observe(busy(), at=10.0)
        assert t.recent_arrivals(10.0) is None
        for k in range(20):
            t.on_routed(f"x{k}", 30, 40, 9.01 + k * 0.049)
        assert t.recent_arrivals(10.0) == Arrivals(20.0, 30, 40)
        f = t.predict(request, 10.0)
        assert f is not None
        e2e.append(f.e2e_s)
    assert e2e[1] > e2e[0]
