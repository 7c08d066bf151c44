"""The client end to end against a real local streaming server: timing, failures, schema, CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from block.bench.client import run_benchmark
from block.bench.results import build_results
from block.workload import Sample

from .sse_server import SseServer

FIRST, GAP = 0.05, 0.01


@pytest.fixture
def server():
    with SseServer(first_delay_s=FIRST, gap_s=GAP) as s:
        yield s


def _samples(n: int, output_tokens: int = 8) -> list[Sample]:
    return [
        Sample(prompt=f"hello number {i}", prompt_tokens=4, output_tokens=output_tokens) for i in range(n)
    ]


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
async def test_measures_ttft_itl_e2e(server: SseServer, endpoint: str) -> None:
    samples = _samples(4)
    arrivals = np.array([0.0, 0.02, 0.04, 0.06])
    result = await asyncio.wait_for(
        run_benchmark(server.url, samples, arrivals, endpoint=endpoint), timeout=20
    )
    assert result.model == "test-model" and not result.interrupted
    assert len(result.records) == 4
    for r in result.records:
        assert r.ok, r.error
        assert r.output_tokens == 8 and len(r.itl_s) == 7
        assert FIRST <= r.ttft_s < FIRST + 0.05
        # Single gaps jitter with scheduling (a late chunk makes the next gap short); their sum cannot.
        assert 7 * GAP * 0.8 <= sum(r.itl_s) < 7 * GAP + 0.1
        assert r.e2e_s == pytest.approx(r.ttft_s + sum(r.itl_s), abs=0.02)
        assert r.instance == "inst-0" and r.status == 200
        assert r.sent_s >= r.scheduled_s
    body = server.bodies[0]
    assert body["stream"] and body["ignore_eos"] and body["max_tokens"] == 8
    assert body["stream_options"] == {"include_usage": True}


async def test_free_length_drops_ignore_eos(server: SseServer) -> None:
    samples = [Sample("hi there you", 3, 5)]
    await asyncio.wait_for(
        run_benchmark(server.url, samples, [0.0], model="m", ignore_eos=False, max_model_len=12), timeout=20
    )
    # what the model length leaves after the prompt and its <|begin_of_text|>: 12 - 3 - 1
    assert "ignore_eos" not in server.bodies[0] and server.bodies[0]["max_tokens"] == 8


async def test_failures_are_recorded_not_raised(server: SseServer) -> None:
    samples = [Sample("please FAIL", 3, 4), *_samples(1, 2)]
    result = await asyncio.wait_for(run_benchmark(server.url, samples, [0.0, 0.0], model="m"), timeout=20)
    bad, good = result.records
    assert not bad.ok and bad.status == 500 and "HTTP 500" in bad.error
    assert good.ok


async def test_servers_separated_by_commas_share_the_requests_in_turn(server: SseServer) -> None:
    with SseServer(first_delay_s=FIRST, gap_s=GAP, instance="inst-1") as other:
        urls = f"{server.url}, {other.url}/v1"
        result = await asyncio.wait_for(run_benchmark(urls, _samples(5), [0.0] * 5, model="m"), timeout=20)
    assert all(r.ok for r in result.records)
    prompts = [[b["prompt"] for b in s.bodies] for s in (server, other)]
    assert sorted(prompts[0]) == [f"hello number {i}" for i in (0, 2, 4)]
    assert sorted(prompts[1]) == [f"hello number {i}" for i in (1, 3)]


async def test_unreachable_server_fails_each_request() -> None:
    result = await asyncio.wait_for(
        run_benchmark("http://127.0.0.1:9", _samples(2), [0.0, 0.0], model="m", timeout_s=5), timeout=20
    )
    assert [r.ok for r in result.records] == [False, False]


async def test_stop_keeps_partial_results(server: SseServer) -> None:
    stop = asyncio.Event()
    samples = _samples(3, output_tokens=2)
    arrivals = [0.0, 0.0, 30.0]  # the last one would come much later

    async def stop_soon() -> None:
        await asyncio.sleep(0.5)
        stop.set()

    stopper = asyncio.create_task(stop_soon())
    result = await asyncio.wait_for(
        run_benchmark(server.url, samples, arrivals, model="m", stop=stop), timeout=20
    )
    await stopper
    assert result.interrupted and len(result.records) == 2 and all(r.ok for r in result.records)
    assert result.duration_s < 5


async def test_results_schema(server: SseServer) -> None:
    result = await asyncio.wait_for(run_benchmark(server.url, _samples(3), [0, 0.01, 0.02]), timeout=20)
    doc = build_results({"qps": 10}, result.records, result.duration_s, {"ttft": 1.0, "ttft_p99": 1.0})
    doc = json.loads(json.dumps(doc))
    assert set(doc) == {"schema_version", "config", "requests", "summary"}
    s = doc["summary"]
    for key in ("ttft_s", "tpot_s", "itl_s", "e2e_s"):
        assert set(s[key]) == {"mean", "p50", "p90", "p99"}
    assert s["completed"] == 3 and s["failed"] == 0
    assert s["tpot_s"]["mean"] == pytest.approx(GAP, abs=0.01)
    assert s["goodput_fraction"] == 1.0 and s["slo_met"] == {"ttft_p99": True}
    assert s["instances"] == {"inst-0": 3}
    assert s["client_overhead"]["parse_s_per_chunk"] > 0
    req = doc["requests"][0]
    assert len(req["itl_s"]) == 7 and req["output_tokens"] == 8 and req["instance"] == "inst-0"


def _cli() -> typer.Typer:
    from block.bench.cli import register

    app = typer.Typer()
    register(app)
    return app


def test_cli_run_and_sweep_and_plot(server: SseServer, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "r.json"
    common = ["--url", server.url, "--dataset", "fixed:16:4", "--num-requests", "6"]
    res = runner.invoke(_cli(), ["bench", *common, "--qps", "50", "--slo", "ttft=2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["summary"]["completed"] == 6 and doc["config"]["qps"] == 50
    res = runner.invoke(
        _cli(),
        ["bench", "sweep", *common, "--qps", "20:40:20", "--out-dir", str(tmp_path / "sw"), "--label", "x"],
    )
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "sw").iterdir()) == ["qps-20.json", "qps-40.json"]
    res = runner.invoke(_cli(), ["plot", str(tmp_path / "sw"), "--out", str(tmp_path / "f.png")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "f.png").stat().st_size > 10_000


def test_cli_capacity(server: SseServer, tmp_path: Path) -> None:
    args = [
        "bench",
        "capacity",
        "--url",
        server.url,
        "--dataset",
        "fixed:16:2",
        "--num-requests",
        "4",
        "--low",
        "10",
        "--high",
        "40",
        "--tolerance",
        "15",
        "--slo",
        "ttft_p99=5",
        "--out-dir",
        str(tmp_path),
    ]
    res = CliRunner().invoke(_cli(), args)
    assert res.exit_code == 0, res.output
    cap = json.loads((tmp_path / "capacity.json").read_text())
    assert cap["capacity_qps"] == 40 and cap["at_least"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bench", "--dataset", "fixed:4:4"], "--url is required"),
        (["bench", "--url", "http://x", "--dataset", "bogus"], "bad workload spec"),
        (["bench", "--url", "http://x", "--slo", "ttft"], "bad SLO"),
        (["bench", "--url", "http://x", "--qps", "-3"], "--qps"),
        (["bench", "sweep", "--url", "http://x", "--qps", "5:1:1", "--out-dir", "o"], "bad rates"),
        (["plot", "/does/not/exist"], "no such file"),
    ],
)
def test_cli_bad_input_is_one_line(args: list[str], message: str) -> None:
    res = CliRunner().invoke(_cli(), args)
    assert res.exit_code == 2
    assert message in res.output and "Traceback" not in res.output
