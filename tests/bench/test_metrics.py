"""Metrics math: percentiles, TPOT, goodput, SLO parsing, rate parsing, capacity bisection."""

from __future__ import annotations

import numpy as np
import pytest

from block.bench.metrics import parse_slos, stats, summarize
from block.bench.record import RequestRecord
from block.bench.sweep import CapacitySearch, parse_rates


def _rec(i: int, ttft: float, e2e: float, out: int, error: str | None = None) -> RequestRecord:
    gaps = [(e2e - ttft) / (out - 1)] * (out - 1) if out > 1 else []
    return RequestRecord(
        i,
        10,
        out,
        scheduled_s=i,
        sent_s=i + 0.001,
        ttft_s=ttft,
        e2e_s=e2e,
        itl_s=gaps,
        output_tokens=out,
        status=200,
        error=error,
        chunks=out,
        parse_s=out * 1e-5,
    )


def test_stats_match_numpy_linear_percentiles() -> None:
    values = np.arange(1, 101, dtype=float)
    s = stats(values)
    assert s == {"mean": 50.5, "p50": 50.5, "p90": pytest.approx(90.1), "p99": pytest.approx(99.01)}
    assert stats([]) == {"mean": None, "p50": None, "p90": None, "p99": None}


def test_tpot_is_decode_time_per_token_after_the_first() -> None:
    assert _rec(0, 1.0, 3.0, 5).tpot_s == pytest.approx(0.5)
    assert _rec(0, 1.0, 1.0, 1).tpot_s is None


def test_summary_throughput_goodput_and_slos() -> None:
    records = [
        _rec(0, 0.5, 2.0, 11),
        _rec(1, 2.5, 4.0, 11),
        _rec(2, 1.0, 3.0, 21),
        _rec(3, 0, 0, 0, error="HTTP 500"),
    ]
    s = summarize(records, duration_s=10.0, slos={"ttft": 2.0, "e2e": 3.5, "ttft_p99": 3.0, "e2e_mean": 1.0})
    assert (s["completed"], s["failed"]) == (3, 1)
    assert s["request_throughput"] == pytest.approx(0.3)
    assert s["output_token_throughput"] == pytest.approx(4.3)
    assert s["goodput"] == pytest.approx(0.2)  # records 0 and 2 meet ttft <= 2 and e2e <= 3.5
    assert s["goodput_fraction"] == pytest.approx(0.5)
    assert s["slo_met"] == {"ttft_p99": True, "e2e_mean": False}
    assert not s["all_slos_met"]
    assert s["ttft_s"]["mean"] == pytest.approx(4.0 / 3)
    assert s["itl_s"]["mean"] == pytest.approx((10 * 0.15 + 10 * 0.15 + 20 * 0.1) / 40)
    assert s["client_overhead"]["send_lag_s"]["mean"] == pytest.approx(0.001)
    assert s["client_overhead"]["parse_s_per_chunk"] == pytest.approx(1e-5)


def test_empty_run() -> None:
    s = summarize([], duration_s=0.0)
    assert s["completed"] == 0 and s["ttft_s"]["p99"] is None and s["goodput_fraction"] is None


def test_parse_slos() -> None:
    assert parse_slos(["ttft=3", "TPOT_P99=0.1", "e2e_mean=20"]) == {
        "ttft": 3.0,
        "tpot_p99": 0.1,
        "e2e_mean": 20.0,
    }
    for bad in ["ttft", "ttft=x", "ttft=-1", "foo=1", "ttft_p42=1"]:
        with pytest.raises(ValueError, match="bad SLO"):
            parse_slos([bad])


def test_parse_rates() -> None:
    assert parse_rates("20:36:2") == [20, 22, 24, 26, 28, 30, 32, 34, 36]
    assert parse_rates("0.5:1.5:0.5") == [0.5, 1.0, 1.5]
    assert parse_rates("20,24") == [20, 24]
    for bad in ["", "5:1:1", "1:5:0", "a", "0", "1:2"]:
        with pytest.raises(ValueError, match="bad rates"):
            parse_rates(bad)


def test_capacity_bisection_finds_threshold() -> None:
    search = CapacitySearch(low=1, high=64, tolerance=0.25, max_probes=20)
    assert search.run(lambda rate: rate <= 30.6) == pytest.approx(30.6, abs=0.25)
    assert len(search.probes) <= 20


def test_capacity_edges() -> None:
    assert CapacitySearch(1, 8).run(lambda r: True) == 8
    assert CapacitySearch(1, 8).run(lambda r: False) is None
    probes = CapacitySearch(1, 64, tolerance=0.001, max_probes=5)
    probes.run(lambda r: r < 10)
    assert len(probes.probes) == 5
    with pytest.raises(ValueError):
        CapacitySearch(5, 1).run(lambda r: True)
