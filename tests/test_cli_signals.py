"""SIGTERM to a `block` command stops the servers it started (they run in their own sessions, so nothing
else would: a killed benchmark used to leave its engines serving, holding their ports and cores)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def children_of(pid: int) -> set[int]:
    """Live processes whose parent is `pid` (from /proc: servers run in new sessions, not the group)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_stops_the_servers_a_command_started(tmp_path: Path) -> None:
    cmd = [sys.executable, "-c", "from block.cli import main; main()", "router", "bench", "--instances", "1",
           "--only", "latency", "--latency-requests", "100000", "--latency-rate", "20"]  # fmt: skip
    bench = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    servers: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(servers) < 2 and bench.poll() is None:
            servers = children_of(bench.pid)  # the engine, then the router
            time.sleep(0.1)
        assert len(servers) >= 2, f"the bench started {len(servers)} servers within 60 s"
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(timeout=60) != 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(alive(p) for p in servers):
            time.sleep(0.1)
        assert not [p for p in servers if alive(p)], "servers outlived the command that started them"
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait(timeout=30)
        for pid in servers:
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)  # each server leads its own process group
