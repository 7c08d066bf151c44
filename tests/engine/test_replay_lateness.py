"""The fidelity replay says how late its client sent each request: a client whose event loop stalls reads
tokens in bursts and its timings describe itself, not the engine."""

from __future__ import annotations

import pytest

from block.engine.server import BackgroundEngine
from block.realengine import engine_metrics
from block.realengine.probe_client import StreamTiming
from block.realengine.replay import ReplayRequest, latency_stats, replay
from tests.engine.conftest import TEST_MODEL


def test_latency_stats_report_the_latest_send() -> None:
    a = StreamTiming(10, 2, 0.0, [0.1, 0.2], send_late_s=0.003)
    b = StreamTiming(10, 2, 1.0, [1.1, 1.3], send_late_s=0.250)
    stats = latency_stats([a, b])
    assert stats.send_late_max_s == 0.250
    assert stats.ttft == pytest.approx([0.1, 0.1]) and stats.failed == 0


def test_replay_records_lateness_and_server_clocks(engine: BackgroundEngine) -> None:
    before = engine_metrics.read_histograms(engine.url)
    timings = replay(engine.url, TEST_MODEL, [ReplayRequest(0.0, 32, 3), ReplayRequest(0.05, 32, 3)])
    after = engine_metrics.read_histograms(engine.url)
    assert all(t.ok and len(t.token_times) == 3 for t in timings)
    assert all(t.send_late_s >= 0.0 for t in timings)
    # The emulator exposes the server-side TTFT and ITL under vLLM's names (no prefill histogram, so it
    # is not an engine-clock source for probes).
    assert engine_metrics.mean_delta(before, after, engine_metrics.TTFT)[1] == 2
    assert engine_metrics.mean_delta(before, after, engine_metrics.ITL)[1] == 4
    assert engine_metrics.read_counters(engine.url) is None


def test_replay_counts_a_refused_request_as_failed(engine: BackgroundEngine) -> None:
    too_long = ReplayRequest(0.0, 100_000, 3)  # beyond any context: the engine answers HTTP 400
    timings = replay(engine.url, TEST_MODEL, [too_long, ReplayRequest(0.0, 16, 2)])
    assert timings[0].error is not None and timings[0].error.startswith("HTTP 400")
    assert timings[1].ok and len(timings[1].token_times) == 2
    assert latency_stats(timings).failed == 1
