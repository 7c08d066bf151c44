"""InstanceTracker: freshness between snapshots, and the InstanceView counts."""

from __future__ import annotations

from block.fleet.tracker import InstanceTracker
from block.policies.base import RoutingRequest
from block.replica import Replica, ReplicaConfig, Request

CFG = ReplicaConfig(
    max_num_seqs=8, max_num_batched_tokens=64, block_size=16, num_gpu_blocks=64, max_model_len=512
)
REQ = RoutingRequest(60, 20)


def test_no_forecast_before_a_snapshot(profile) -> None:
    t = InstanceTracker("a", profile, CFG)
    assert t.predict(REQ, 0.0) is None and t.snapshot_age(1.0) is None
    assert t.free_blocks == 64 and t.waiting == 0


def test_a_burst_raises_the_forecast_until_a_snapshot_shows_it(profile) -> None:
    replica = Replica(CFG, profile)
    t = InstanceTracker("a", profile, CFG)
    t.observe(replica.snapshot(), at=0.0)
    calm = t.predict(REQ, 0.01)
    assert calm is not None

    for i in range(5):  # a burst routed here, not yet in any snapshot
        t.on_routed(RoutingRequest(60, 40, id=f"b{i}"), 0.01)
    assert t.waiting == 5 and t.in_flight == 5 and t.waiting_prompt_tokens == 300
    assert t.routed_in_last(60, now=0.02) == 5 and t.routed_in_last(0.001, now=0.1) == 0
    busy = t.predict(REQ, 0.02)
    assert busy is not None and busy.e2e_s > calm.e2e_s and busy.queue_delay_s > calm.queue_delay_s
    assert t.last_forecast is busy

    # the engine got them at 0.01: the next snapshot shows them and the pending copies go
    replica.advance_to(0.01)
    for i in range(5):
        replica.add(Request(f"b{i}", 60, 40, expected_output_tokens=40))
    snap = replica.snapshot()
    t.observe(snap, at=0.01)
    assert t.pending == [] and t.waiting == 5 and t.in_flight == 5  # no double counting
    again = t.predict(REQ, 0.02)
    assert again is not None and abs(again.e2e_s - busy.e2e_s) < 1e-9  # same knowledge, same answer


def test_finished_and_forgotten_requests_leave(profile) -> None:
    replica = Replica(CFG, profile)
    replica.add(Request("x", 60, 400, expected_output_tokens=400))
    replica.step()
    t = InstanceTracker("a", profile, CFG, forget_after_s=1.0)
    t.observe(replica.snapshot(), at=0.0)
    t.on_routed(RoutingRequest(60, 400, id="x"), -0.5)
    t.on_routed(RoutingRequest(60, 10, id="lost"), 0.0)
    with_x = t.predict(REQ, 0.0)
    t.on_finished("x", at=0.1)  # ended early: it leaves the snapshot's queue at once
    assert t.running == 0 and t.in_flight == 1
    without_x = t.predict(REQ, 0.1)
    assert with_x is not None and without_x is not None and without_x.e2e_s < with_x.e2e_s
    t.observe(Replica(CFG, profile).snapshot(), at=0.5)
    assert [s.id for s in t.pending] == ["lost"]  # routed 0.5 s ago: maybe still on its way
    t.observe(Replica(CFG, profile).snapshot(), at=2.0)
    assert t.pending == []  # no snapshot showed it for 2 s: gone


def test_tracker_forecast_equals_the_library_forecast(profile) -> None:
    from block.predictor import forecast

    replica = Replica(CFG, profile)
    for i in range(6):
        replica.add(Request(f"r{i}", 50 + i, 30, expected_output_tokens=30))
    for _ in range(5):
        replica.step()
    snap = replica.snapshot()
    t = InstanceTracker("a", profile, CFG, added_delay="horizon")
    t.observe(snap, at=100.0)
    t.on_routed(RoutingRequest(40, 10, id="p"), 100.01)
    got = t.predict(REQ, 100.05)
    want = forecast(
        snap, REQ, profile, pending=t.pending, pending_at=[0.01], elapsed_s=0.05, added_delay="horizon"
    )
    assert got is not None
    assert abs(got.e2e_s - want.e2e_s) < 1e-9 and abs(got.added_delay_s - want.added_delay_s) < 1e-9


def test_a_sidecar_in_flight_record_follows_the_snapshots(profile) -> None:
    """in_flight_follows_snapshots (the sidecar's): ids never seen go after forget_after_s, and one whose
    /finished was lost goes when the engine stops showing it. The router's record stays exact."""
    replica = Replica(CFG, profile)
    replica.add(Request("real", 60, 400, expected_output_tokens=400))
    replica.step()
    sidecar = InstanceTracker("a", profile, CFG, forget_after_s=1.0, in_flight_follows_snapshots=True)
    router = InstanceTracker("a", profile, CFG, forget_after_s=1.0)
    for t in (sidecar, router):
        t.on_routed(RoutingRequest(60, 400, id="real"), 0.0)
        for i in range(100):
            t.on_routed(RoutingRequest(2000, 2000, id=f"fake{i}"), 0.0)
        t.observe(replica.snapshot(), at=0.5)
        assert t.in_flight == 101 and len(t.pending) == 100  # the fakes may still be on their way
        t.observe(replica.snapshot(), at=1.5)
        assert t.pending == []
    assert sidecar.in_flight == 1 and router.in_flight == 101
    sidecar.observe(Replica(CFG, profile).snapshot(), at=2.0)  # "real" ended; its /finished was lost
    assert sidecar.in_flight == 0


def test_an_idle_instance_read_idle_again_keeps_what_was_prepared(profile) -> None:
    replica = Replica(CFG, profile)
    t = InstanceTracker("a", profile, CFG)
    t.observe(replica.snapshot(), at=0.0)
    first = t.predict(REQ, 0.01)
    version, forecaster = t.version, t.forecaster()
    replica.advance_to(0.5)
    t.observe(replica.snapshot(), at=0.5)  # still idle, nothing routed here since
    assert t.version == version and t.forecaster() is forecaster and t.snapshot_at == 0.5
    again = t.predict(REQ, 0.6)
    assert first is not None and again is not None and abs(again.e2e_s - first.e2e_s) < 1e-9

    t.on_routed(RoutingRequest(60, 20, id="r"), 0.6)  # something routed: the next read counts again
    replica.add(Request("r", 60, 20, expected_output_tokens=20))
    t.observe(replica.snapshot(), at=0.7)
    assert t.version != version and t.waiting + t.running == 1 and t.pending == []
