"""`block router --discover k8s:NAMESPACE/LABEL_SELECTOR` against a fake Kubernetes API server (real HTTP,
the list/watch protocol) and three real engine emulators: ready endpoints join, a terminating one drains
with its requests finishing, a new one joins with its pod's profile label, and after a broken watch and a
compaction (410 Gone) the router lists again and drains what is gone. No request is lost throughout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest

from block.engine.server import BackgroundEngine
from block.engine.settings import EngineSettings, replica_config
from block.profiles import load_profile
from block.router import discovery
from block.router.app import RouterApp
from block.router.config import RouterConfig
from block.router.discovery import parse_spec
from tests.deploy.fake_kubernetes_api import FakeKubernetesApi, endpoint, endpoint_slice, kubeconfig
from tests.router.servers import Served, count_words

NS = "engines"
SERVICE = "engine"
TOKENS = 12


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def test_parse_spec() -> None:
    spec = parse_spec("k8s:prod/kubernetes.io/service-name=vllm,tier!=canary")
    assert spec.namespace == "prod"
    assert spec.selector[0] == ("kubernetes.io/service-name", "vllm")
    for bad in ("k8s:prod", "dns:prod/a=b", "k8s:/a=b", "k8s:prod/a in (b)"):
        with pytest.raises(ValueError):
            parse_spec(bad)
    with pytest.raises(ValueError):
        RouterConfig(discover="k8s:no-selector")
    with pytest.raises(ValueError, match="give one"):
        RouterConfig.build(
            discover="k8s:a/b=c", provision="reactive", slo_e2e=5, standby=["http://10.0.0.9:8000"]
        )


async def test_discovery_joins_drains_and_removes_without_losing_requests(tmp_path, monkeypatch) -> None:
    api = await FakeKubernetesApi(NS).start()
    path = tmp_path / "kubeconfig"
    path.write_text(kubeconfig(api.url))
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.setattr(discovery, "RETRY_S", 0.2)  # the re-list after a broken watch, sooner
    profile = load_profile("tiny-fast")
    engines = [
        BackgroundEngine(EngineSettings(profile, replica_config(profile), noise=0.0, seed=i)).start()
        for i in range(3)
    ]
    ids = [f"127.0.0.1:{e.port}" for e in engines]

    def slice_of(i: int, **conditions: bool) -> dict:
        pod = f"engine-{i}"
        return endpoint_slice(
            f"engine-{i}-slice", SERVICE, engines[i].port, [endpoint("127.0.0.1", pod, **conditions)]
        )

    for i in range(3):
        api.put_pod(f"engine-{i}", {"app": "engine", "block/profile": "tiny-fast"}, "127.0.0.1")
    await api.put_slice(slice_of(0))
    await api.put_slice(slice_of(1))
    other = endpoint_slice("other-slice", "not-the-engines", engines[2].port, [endpoint("127.0.0.1", "x")])
    await api.put_slice(other)  # another Service's slice: the selector leaves it out

    config = RouterConfig(
        discover=f"k8s:{NS}/kubernetes.io/service-name={SERVICE}",
        policy="block",
        deadline_ms=500,
        health_interval=0.1,
        refresh_ms=20,
    )
    app = RouterApp(config, count_tokens=count_words)
    served = await Served(app).start()
    pool = app.pool
    drained: dict[str, tuple[float, int]] = {}  # instance id -> (when set draining, requests in flight)
    set_draining = pool.set_draining

    def recording(inst, draining: bool) -> None:
        if draining:
            drained[inst.id] = (time.monotonic(), inst.tracker.in_flight if inst.tracker else 0)
        set_draining(inst, draining)

    monkeypatch.setattr(pool, "set_draining", recording)
    results: list[tuple[int, int, str, float]] = []  # (status, tokens received, instance, finished at)
    stop = asyncio.Event()
    senders: list[asyncio.Task[None]] = []

    async def load(client: httpx.AsyncClient, n: int) -> None:
        while not stop.is_set():
            body = {"prompt": f"hello {n} " * 8, "max_tokens": TOKENS, "ignore_eos": True, "stream": True}
            async with client.stream("POST", served.url + "/v1/completions", json=body) as r:
                tokens = 0
                async for line in r.aiter_lines():
                    if line.startswith("data: {"):
                        tokens += 1
                instance = r.headers.get("x-block-instance", "")
                results.append((r.status_code, tokens, instance, time.monotonic()))

    try:
        assert await until(lambda: pool.routable_ids == {ids[0], ids[1]}), pool.routable_ids
        assert pool.instances[ids[0]].profile == "tiny-fast"  # the pod's label
        async with httpx.AsyncClient(timeout=30) as client:
            senders += [asyncio.create_task(load(client, n)) for n in range(4)]
            assert await until(lambda: any(r[2] == ids[1] for r in results))

            # engine 1 terminates: it drains (out of rotation), then leaves once its requests finished
            await api.put_slice(slice_of(1, ready=False, terminating=True))
            assert await until(lambda: ids[1] not in pool.routable_ids)
            assert await until(lambda: ids[1] not in pool.instances)
            # what was in flight there when it was set draining finished there, completely (checked below)
            draining_at, in_flight = drained[ids[1]]
            finished_there = [r for r in results if r[2] == ids[1] and r[3] >= draining_at]
            assert len(finished_there) >= in_flight

            # engine 2 becomes ready: it joins
            await api.put_slice(slice_of(2))
            assert await until(lambda: ids[2] in pool.routable_ids)
            assert await until(lambda: any(r[2] == ids[2] for r in results))

            # the API server restarts and compacts while engine 0's slice goes: a new list drains it
            api.close_watches()
            api.compact()
            await api.delete_slice("engine-0-slice")
            assert await until(lambda: ids[0] not in pool.instances, timeout=15.0)
            assert pool.routable_ids == {ids[2]}
            sent_after = len(results)
            assert await until(lambda: len(results) >= sent_after + 4)
            stop.set()
            await asyncio.wait_for(asyncio.gather(*senders), 30.0)
        assert results and all(r[:2] == (200, TOKENS) for r in results), [
            r for r in results if r[:2] != (200, TOKENS)
        ]
        assert {r[2] for r in results} == set(ids)
        lists = [r for r in api.requests if "endpointslices" in r and "watch" not in r]
        assert len(lists) >= 2  # the first list, and the one after the broken watch
    finally:
        stop.set()
        for task in senders:
            task.cancel()
        await served.stop()
        await api.stop()
        for e in engines:
            e.stop()
