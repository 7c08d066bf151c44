"""`block demo` end to end at toy scale: real engines and routers as processes, the real bench client."""

from __future__ import annotations

from pathlib import Path

from block.demo import DemoSettings, run_demo
from block.launch import _LIVE


def test_demo_runs_every_policy_on_the_same_requests_and_stops_its_servers(tmp_path: Path) -> None:
    settings = DemoSettings(
        policies=("block", "round-robin"),
        instances=2,
        profile="tiny-fast",
        qps=20.0,
        duration_s=1.5,
        max_model_len=512,
        out=tmp_path,
    )
    results = run_demo(settings)

    assert set(results) == {"block", "round-robin"}
    for policy, res in results.items():
        summary = res["summary"]
        assert summary["completed"] == settings.num_requests and summary["failed"] == 0, policy
        assert summary["ttft_s"]["p99"] > 0
        assert (tmp_path / f"{policy}.json").exists()
        served_by = {r["instance"] for r in res["requests"]}
        assert len(served_by) == 2, f"{policy} used {served_by}"  # both engines of its own cluster
    block_tokens = [r["output_tokens"] for r in results["block"]["requests"]]
    rr_tokens = [r["output_tokens"] for r in results["round-robin"]["requests"]]
    assert block_tokens == rr_tokens  # the same requests went to both clusters
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    # the run was judged from its engines' own lag counters and its client's send times, and says so
    validity = results["block"]["config"]["validity"]
    assert validity["valid"] in (True, False) and validity["steps"] > 0
    assert validity["send_late_p99_s"] is not None
    assert validity["message"].startswith("valid" if validity["valid"] else "INVALID")
    assert results["round-robin"]["config"]["validity"] == validity  # one verdict for the whole run
    assert not _LIVE  # every engine and router was stopped
