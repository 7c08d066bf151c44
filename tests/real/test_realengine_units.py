"""Fast checks of the real-engine helpers that need no vLLM (these run in the ordinary suite)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from block import launch
from block.realengine import launcher
from block.realengine.probe_client import StreamTiming
from block.realengine.profile_fit import (
    Observation,
    ProbePlan,
    decode_window,
    design_row,
    fit,
    itl_terms,
    knots_for,
    prefill_terms,
    probe_steps,
)
from tests.profiles.synthetic_probes import synthetic_observations, truth


@pytest.mark.parametrize("client_clock", [False, True])
def test_fit_recovers_a_known_profile(client_clock: bool) -> None:
    p, plan = truth(), ProbePlan()
    obs = synthetic_observations(p, plan, 0.004, client_clock)
    known = None if client_clock else 0.004
    result = fit(obs, plan, "fitted", "m", "g", request_overhead_s=known)
    assert result.rms_relative_error < 1e-3
    assert result.request_overhead_s == pytest.approx(0.004, rel=1e-2)
    f = result.profile
    for c, ctx in ((1, 100), (8, 600), (48, 2000)):
        assert f.decode_step_time(c, c * ctx) == pytest.approx(p.decode_step_time(c, c * ctx), rel=1e-2)
    assert f.prefill_time(2048, 512) == pytest.approx(p.prefill_time(2048, 512), rel=1e-2)


def test_probe_steps_follow_chunked_prefill() -> None:
    plan = ProbePlan()
    steps = probe_steps(2, 600, 3, plan)
    # 1200 prompt tokens in 512-token chunks: 3 steps (the 2nd request finishes its prompt in the 3rd),
    # first tokens in steps 2 and 3, then decodes until both have 3 tokens.
    assert [s.num_tokens for s, _, _ in steps[:3]] == [512, 512, 176 + 1]
    assert sum(first for _, first, _ in steps) == 2
    assert sum(later for _, _, later in steps) == 2 * 2
    terms = itl_terms(2, 600, 3, plan)
    assert sum(w for _, w in terms) == pytest.approx(1.0)


def test_design_row_counts_prefill_chunks_and_pairs() -> None:
    xs = knots_for(ProbePlan())
    row = design_row(Observation("ttft", 1.0, prefill_terms(1000, 512), api=1.0), xs)
    assert row[0] == row[1] == 2  # two steps: overhead and per-seq twice
    assert row[3] == 512 * 513 / 2 + (488 * 512 + 488 * 489 / 2)
    assert row[4] == 1.0  # one request overhead


def test_decode_window_uses_only_steps_where_all_decode() -> None:
    # Two requests; the second starts decoding 5 steps late; 1 ms steps.
    a = StreamTiming(100, 30, 0.0, [0.010 + 0.001 * i for i in range(30)])
    b = StreamTiming(100, 30, 0.0, [0.015 + 0.001 * i for i in range(30)])
    w = decode_window([a, b])
    assert w is not None and w.seconds == pytest.approx(0.001, rel=1e-6)
    assert w.terms[0][0].num_seqs == 2


def test_launcher_stops_the_whole_process_group(tmp_path: Path) -> None:
    # A server whose child would survive a plain kill of the parent.
    script = tmp_path / "srv.py"
    script.write_text(
        "import http.server, subprocess, sys\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.end_headers(); self.wfile.write(b'ok')\n"
        "    def log_message(self, *a): pass\n"
        "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n"
    )
    server = launcher.ManagedServer(
        "toy", lambda port: [sys.executable, str(script), str(port)], log_dir=tmp_path
    )
    with server:
        assert launcher.health_ok(server.url)
        pgid = server.pgid
        time.sleep(0.3)  # let the child start
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    assert not launch._LIVE


def test_launcher_reports_a_server_that_exits(tmp_path: Path) -> None:
    server = launcher.ManagedServer(
        "dies", lambda port: [sys.executable, "-c", "print('bye')"], log_dir=tmp_path
    )
    with pytest.raises(launcher.ServerError, match="exited"):
        server.start(timeout_s=10, attempts=1)


def test_fidelity_judges_the_emulator_against_the_mean_of_the_real_runs() -> None:
    from block.realengine.fidelity import average, compare

    def run(ttft: float, tpot: float, e2e: float) -> dict[str, dict]:
        stats = {"ttft": ttft, "tpot": tpot, "e2e": e2e}
        return {"2": {m: {"mean": v, "p99": 2 * v} for m, v in stats.items()}}

    real = average([run(0.10, 0.004, 1.0), run(0.12, 0.006, 1.2)])
    assert real["2"]["tpot"] == {"mean": pytest.approx(0.005), "p99": pytest.approx(0.010)}
    err = compare(real, run(0.11, 0.0055, 1.21))["2"]
    assert err["ttft_mean"] == pytest.approx(0.0) and err["tpot_p99"] == pytest.approx(0.1)
    assert err["e2e_mean"] == pytest.approx(0.1)
