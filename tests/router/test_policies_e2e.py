"""Every registered policy, chosen by name, routes real requests end to end."""

from __future__ import annotations

import httpx
import pytest

from block.policies import POLICIES
from tests.router.servers import FakeUpstream, router, upstreams


@pytest.mark.parametrize("policy", sorted(POLICIES))
async def test_policy_by_name(policy: str) -> None:
    fakes = [FakeUpstream(tokens=2) for _ in range(3)]
    async with upstreams(*fakes) as ups, router([u.url for u in ups], policy=policy, seed=1) as (app, url):
        async with httpx.AsyncClient(timeout=5) as c:
            for i in range(6):
                r = await c.post(url + "/v1/completions", json={"prompt": f"x {i}", "max_tokens": 2})
                assert r.status_code == 200
                assert r.headers["x-block-instance"] in app.pool.instances
        text = app.metrics.render().decode()
        assert f'policy="{policy}"' in text
    assert sum(len(f.requests) for f in fakes) == 6
    if policy == "round-robin":
        assert [len(f.requests) for f in fakes] == [2, 2, 2]
