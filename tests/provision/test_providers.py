"""Static pool and command hooks (a tiny shell script stands in for Kubernetes or Ray)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from block.provision.command_hooks import CommandHooks
from block.provision.providers import ProvisionError, make_provider
from block.provision.static_pool import StaticPool


async def test_static_pool_hands_out_and_takes_back() -> None:
    pool = make_provider("static", standby=["http://a:1/", "http://b:2"])
    assert isinstance(pool, StaticPool) and pool.standby() == ["http://a:1", "http://b:2"]
    assert await pool.acquire() == "http://a:1"
    assert await pool.acquire() == "http://b:2"
    with pytest.raises(ProvisionError):
        await pool.acquire()
    await pool.release("http://b:2")
    assert pool.standby() == ["http://b:2"]
    await pool.close()


SCRIPT = """#!/bin/sh
# scale_up: log and print a URL (after some noise); scale_down: log the argument and the env var.
LOG="$(dirname "$0")/calls.log"
if [ "$BLOCK_PROVISION_ACTION" = scale_up ]; then
  n=$(($(wc -l < "$LOG" 2>/dev/null || echo 0) + 1))
  echo "up $n" >> "$LOG"
  echo "starting pod..."
  echo "http://10.0.0.$n:8000/"
else
  echo "down $1 $BLOCK_INSTANCE_URL" >> "$LOG"
fi
"""


async def test_command_hooks(tmp_path: Path) -> None:
    script = tmp_path / "hook.sh"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    hooks = CommandHooks(str(script), str(script), timeout_s=10)
    assert await hooks.acquire() == "http://10.0.0.1:8000"
    assert await hooks.acquire() == "http://10.0.0.2:8000"
    await hooks.release("http://10.0.0.1:8000")
    lines = (tmp_path / "calls.log").read_text().splitlines()
    assert lines == ["up 1", "up 2", "down http://10.0.0.1:8000 http://10.0.0.1:8000"]


async def test_command_hook_failures() -> None:
    with pytest.raises(ProvisionError, match="no http"):
        await CommandHooks("echo no url here", None).acquire()
    with pytest.raises(ProvisionError, match="exited 3"):
        await CommandHooks("echo oops >&2; exit 3", None).acquire()
    slow = "sleep 30"
    started = time.monotonic()
    with pytest.raises(ProvisionError, match="timed out"):
        await CommandHooks(slow, None, timeout_s=0.3).acquire()
    assert time.monotonic() - started < 5
    await CommandHooks("true", None).release("http://x:1")  # no scale-down hook: nothing to do
    with pytest.raises(ValueError):
        CommandHooks("", None)


def test_child_of_timed_out_hook_is_gone(tmp_path: Path) -> None:
    # The hook and the child it started are killed together (process group) when it times out.
    marker = tmp_path / "child-alive"
    slow = f"(sleep 1; touch {marker}) & sleep 30"
    with pytest.raises(ProvisionError):
        asyncio.run(CommandHooks(slow, None, timeout_s=0.2).acquire())
    time.sleep(1.3)
    assert not marker.exists()


def test_router_config_validation() -> None:
    from block.router.config import RouterConfig

    cfg = RouterConfig.build(
        instances=["http://a:1"], provision="preemptive", slo_e2e=5.0, standby=["http://b:2/"]
    )
    s = cfg.provision.settings(len(cfg.instances))
    assert (s.mode, s.min_instances, s.max_instances) == ("preemptive", 1, 2)  # max: instances + standby
    assert RouterConfig(instances=["http://a:1"]).provision.settings(1) is None
    bad = [
        {"provision": "preemptive"},  # no SLO
        {"provision": "sometimes", "slo_e2e": 1.0},
        {"provision": "reactive", "slo_e2e": 1.0, "provider": "cloud"},
        {"provision": "reactive", "slo_e2e": 1.0, "provider": "command", "max_instances": 3},  # no hook
        {"provision": "reactive", "slo_e2e": 1.0, "provider": "local-emulator"},  # no max
        {"provision": "reactive", "slo_e2e": 1.0, "min_instances": 3, "max_instances": 2},
    ]
    for kw in bad:
        with pytest.raises(ValueError):
            RouterConfig.build(**kw)
