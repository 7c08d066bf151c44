"""Fast checks of `block realengine peers` helpers: no vLLM, no sglang-router, no servers."""

from __future__ import annotations

from pathlib import Path

import pytest

from block.realengine import peers
from block.realengine.peers import BLOCK, SGLANG, PeerConfig

METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
vllm:num_requests_running{engine="0",model_name="tiny-llama"} 3.0
vllm:num_requests_waiting{engine="0",model_name="tiny-llama"} 2.0
vllm:num_requests_waiting_by_reason{engine="0",model_name="tiny-llama",reason="capacity"} 7.0
vllm:request_success_total{engine="0",finished_reason="stop",model_name="tiny-llama"} 1.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="tiny-llama"} 291.0
vllm:request_success_total{engine="0",finished_reason="abort",model_name="tiny-llama"} 2.0
vllm:generation_tokens_total{engine="0",model_name="tiny-llama"} 17709.0
vllm:prefix_cache_queries_total{engine="0",model_name="tiny-llama"} 5000.0
vllm:prefix_cache_hits_total{engine="0",model_name="tiny-llama"} 1250.0
"""


def test_parse_configs() -> None:
    assert peers.parse_configs("all") == list(peers.ALL_CONFIGS)
    assert [c.label for c in peers.ALL_CONFIGS] == [
        "sglang-router:round_robin",
        "sglang-router:power_of_two",
        "sglang-router:cache_aware",
        "block:block",
        "block:llumnix",
        "block:round-robin",
        "block:po2",
    ]
    assert peers.parse_configs("sglang:cache_aware, block:llumnix") == [
        PeerConfig(SGLANG, "cache_aware"),
        PeerConfig(BLOCK, "llumnix"),
    ]
    for bad in ("", "sglang:llumnix", "block:cache_aware", "nginx:round_robin", "block"):
        with pytest.raises(ValueError):
            peers.parse_configs(bad)


def test_engine_metrics_ignore_the_by_reason_gauge() -> None:
    m = peers.parse_engine_metrics(METRICS)
    assert m == {
        "running": 3.0,
        "waiting": 2.0,
        "finished": 294.0,
        "prefix_queries": 5000.0,
        "prefix_hits": 1250.0,
    }


def test_routers_bind_locally_with_the_requested_policy(tmp_path: Path) -> None:
    engines = ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    sg = peers.sglang_router_server(Path("/venv/bin/python"), "power_of_two", engines, tmp_path)
    argv = list(sg._argv_for_port(4242))
    assert argv[:3] == ["/venv/bin/python", "-m", "sglang_router.launch_router"]
    assert argv[argv.index("--worker-urls") + 1 : argv.index("--worker-urls") + 3] == engines
    assert argv[argv.index("--policy") + 1] == "power_of_two"
    assert argv[argv.index("--port") + 1] == "4242"
    assert argv[argv.index("--host") + 1] == argv[argv.index("--prometheus-host") + 1] == "127.0.0.1"
    blk = peers.block_router_server("llumnix", engines, Path("p.json"), tmp_path)
    argv = list(blk._argv_for_port(4243))
    assert argv[argv.index("--policy") + 1] == "llumnix" and "--calibration" not in argv
    cal = peers.block_router_server("block+calibration", engines, Path("p.json"), tmp_path)
    argv = list(cal._argv_for_port(4244))
    assert argv[argv.index("--policy") + 1] == "block" and "--calibration" in argv
    assert peers.parse_configs("block:block+calibration") == [PeerConfig(BLOCK, "block+calibration")]
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--instance"] == engines
    assert argv[argv.index("--profile") + 1] == "p.json"


def test_block_routers_read_the_models_tokenizer_and_the_kv_events(tmp_path: Path) -> None:
    engines = ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    events = ["tcp://127.0.0.1:11,tcp://127.0.0.1:12", "tcp://127.0.0.1:21,tcp://127.0.0.1:22"]
    exact = peers.block_router_server(
        "block+kv-events", engines, Path("p.json"), tmp_path, tokenizer=Path("/m"), kv_events=events
    )
    argv = list(exact._argv_for_port(4245))
    assert argv[argv.index("--policy") + 1] == "block" and argv[argv.index("--tokenizer") + 1] == "/m"
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--kv-events"] == [
        f"{u}={e}" for u, e in zip(engines, events, strict=True)
    ]
    plain = peers.block_router_server("block", engines, Path("p.json"), tmp_path, kv_events=events)
    assert "--kv-events" not in list(plain._argv_for_port(4246))  # only the +kv-events config subscribes
    with pytest.raises(ValueError, match="prefix-caching"):
        peers.block_router_server("block+kv-events", engines, Path("p.json"), tmp_path)


def test_a_session_workload_replays_turns_after_their_answers() -> None:
    settings = peers.PeerSettings(num_requests=40, qps=0.5, dataset="sharegpt-chat", max_output_tokens=32)
    load = peers.workload(settings)
    assert load.sessions is not None and len(load.samples) == len(load.arrivals) == 40
    assert any(s.turn > 0 for s in load.samples)  # some sessions go past their first turn
    assert max(s.output_tokens for s in load.samples) <= 32
    first_turns = peers.workload(peers.PeerSettings(num_requests=40))
    assert first_turns.sessions is None and len(first_turns.arrivals) == 40


def _results(label: str, split: list[int | None], overhead: float | None) -> dict:
    stats = {"mean": 0.25, "p50": 0.2, "p90": 0.4, "p99": 0.5}
    return {
        "config": {"label": label, "engine_split": split, "router_overhead_s": overhead},
        "summary": {
            "completed": 3,
            "failed": 1,
            "ttft_s": stats,
            "e2e_s": {**stats, "mean": 1.5, "p99": 3.0},
            "request_throughput": 2.0,
            "output_token_throughput": 200.0,
        },
        "requests": [
            {"error": None, "output_tokens": 5, "expected_output_tokens": 5},
            {"error": None, "output_tokens": 4, "expected_output_tokens": 5},
            {"error": "HTTP 503", "output_tokens": None, "expected_output_tokens": 5},
        ],
    }


def test_table_counts_short_outputs_as_failures() -> None:
    rows = [
        peers.table_row(_results("block:block", [2, 2], 0.0012)),
        peers.table_row(_results("sglang-router:round_robin", [None, 4], None)),
    ]
    assert rows[0]["wrong_tokens"] == 1 and rows[0]["ttft_mean_ms"] == 250.0
    lines = peers.format_table(rows).splitlines()
    assert len(lines) == 4 and lines[0].startswith("| config |")
    row = "| block:block | 3 | 2 | 250.0 | 500.0 | 1.500 | 3.000 | 2.00 | 200 | 2/2 | +1.20 | - |"
    assert lines[2] == row
    assert lines[3].endswith("| ?/4 | - | - |")
    cached = _results("block:block", [2, 2], None)
    cached["config"] |= {"prefix_cache_queries": 1000.0, "prefix_cache_hits": 400.0}
    assert peers.format_table([peers.table_row(cached)]).splitlines()[2].endswith("| 40.0% |")


def _run(label: str, ttft_p99: float | None, e2e_p99: float | None) -> dict:
    res = _results(label, [1, 1], None)
    res["summary"]["ttft_s"] = {**res["summary"]["ttft_s"], "p99": ttft_p99}
    res["summary"]["e2e_s"] = {**res["summary"]["e2e_s"], "p99": e2e_p99}
    return res


def test_repeats_are_summarized_as_median_min_max_per_config() -> None:
    runs = [
        _run("block:block", 2.0, 5.0),
        _run("sglang-router:power_of_two", 1.4, 3.3),
        _run("block:block", 3.3, 10.7),
        _run("sglang-router:power_of_two", 2.4, 5.7),
        _run("block:block", 2.5, 5.3),
        _run("sglang-router:power_of_two", None, None),  # a round where nothing completed
    ]
    configs = peers.summarize_repeats(runs)
    assert configs == {
        "block:block": {
            "ttft_p99_s": {"median": 2.5, "min": 2.0, "max": 3.3},
            "e2e_p99_s": {"median": 5.3, "min": 5.0, "max": 10.7},
        },
        "sglang-router:power_of_two": {
            "ttft_p99_s": {"median": pytest.approx(1.9), "min": 1.4, "max": 2.4},
            "e2e_p99_s": {"median": pytest.approx(4.5), "min": 3.3, "max": 5.7},
        },
    }
    assert peers.summarize_repeats([_run("block:po2", None, None)]) == {
        "block:po2": {
            "ttft_p99_s": {"median": None, "min": None, "max": None},
            "e2e_p99_s": {"median": None, "min": None, "max": None},
        }
    }
    lines = peers.format_spread_table(configs, 3).splitlines()
    assert lines[0].startswith("| config | TTFT p99 s, median (min-max) of 3 |")
    assert lines[2] == "| block:block | 2.500 (2.000-3.300) | 5.300 (5.000-10.700) |"


def test_each_round_writes_its_own_results_file(tmp_path: Path) -> None:
    cfg = PeerConfig(BLOCK, "po2")
    assert peers.results_path(tmp_path, cfg, 0, 1) == tmp_path / "block-po2.json"
    assert [peers.results_path(tmp_path, cfg, k, 3).name for k in range(3)] == [
        "block-po2-r1.json",
        "block-po2-r2.json",
        "block-po2-r3.json",
    ]


def test_the_repeat_flag_reaches_the_settings() -> None:
    from typer.testing import CliRunner

    from block.realengine.cli import realengine

    result = CliRunner().invoke(realengine, ["peers", "--help"])
    assert result.exit_code == 0 and "--repeat" in result.output
    bad = CliRunner().invoke(realengine, ["peers", "--repeat", "0"])
    assert bad.exit_code == 2
    exact_without_cache = CliRunner().invoke(realengine, ["peers", "--configs", "block:block+kv-events"])
    assert exact_without_cache.exit_code == 2 and "needs --prefix-caching" in exact_without_cache.output
