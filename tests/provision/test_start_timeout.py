"""An instance the provisioner added that never becomes healthy is released after the start timeout."""

from __future__ import annotations

from pathlib import Path

import httpx

from block.launch import free_port
from block.router.app import RouterApp
from block.router.config import RouterConfig
from tests.provision.test_router_provision import metric, wait_for
from tests.router.servers import Served, count_words


async def test_never_healthy_instance_is_released(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: it never passes a health check
    released = tmp_path / "released.txt"
    config = RouterConfig.build(
        instances=[],
        provision="preemptive",
        slo_e2e=5.0,
        min_instances=1,
        max_instances=1,
        provider="command",
        scale_up_cmd=f"echo {dead}",
        scale_down_cmd=f"printf '%s\\n' >> {released}",
        provision_start_timeout_s=0.5,
        health_interval=0.1,
        provision_interval_s=0.05,
    )
    app = RouterApp(config, count_tokens=count_words)
    served = await Served(app).start()
    try:
        scaler = app.autoscaler
        assert scaler.start_timeout_s == 0.5
        await wait_for(lambda: released.exists(), 10, "the scale-down hook for the dead instance")
        assert released.read_text().split() == [dead]
        assert app.pool.instances == {}  # out of the pool, not merely unhealthy
        async with httpx.AsyncClient(timeout=10) as c:
            text = (await c.get(served.url + "/metrics")).text
            listing = (await c.get(served.url + "/instances")).json()
        assert metric(text, "block_router_provision_start_timeouts_total") == 1
        assert metric(text, "block_router_provision_failures_total", action="scale_up") == 1
        assert listing["provision"]["start_timeout_s"] == 0.5
        # The controller backs off (5 s) before it tries again: no second start within this test.
        assert scaler.controller.decide(scaler.controller.last_action_at + 0.1, scaler.counts()) is None
    finally:
        await served.stop()
