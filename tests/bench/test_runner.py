"""`block bench` runs: what is saved with the results describes the run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from block.bench.runner import BenchSettings, run_once
from block.workload import Sample

from .sse_server import SseServer


def test_started_at_is_when_the_run_began_not_when_it_was_saved() -> None:
    settings = BenchSettings(url="", process="constant", qps=1.0, num_requests=2)
    samples = [Sample(prompt=f"hello {i}", prompt_tokens=2, output_tokens=2) for i in range(2)]
    with SseServer(first_delay_s=0.01, gap_s=0.01) as server:
        settings.url = server.url
        before = datetime.now(UTC)
        results, run = run_once(settings, samples, qps=1.0)  # sends at 1 s and 2 s
    assert len(run.records) == 2 and run.duration_s >= 2.0
    started = datetime.fromisoformat(results["config"]["started_at"])
    # whole seconds: at most one second after `before`; the save came two seconds later
    assert before.replace(microsecond=0) <= started <= before + timedelta(seconds=1)
