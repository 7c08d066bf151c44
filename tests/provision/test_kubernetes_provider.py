"""Provider `kubernetes` against a fake Kubernetes API server (real HTTP): scale-up patches the Deployment's
scale subresource and hands out the new pod's address; scale-down marks that pod cheapest to delete, then
scales down, so the ReplicaSet (played by the test, as the documented pod-deletion-cost rule says) removes
the drained pod and not another."""

from __future__ import annotations

from pathlib import Path

import pytest

from block.provision.config import ProvisionConfig
from block.provision.kubernetes import DELETION_COST, KubernetesDeployment
from block.provision.provider import ProvisionError
from block.provision.providers import make_provider
from tests.deploy.fake_kubernetes_api import FakeKubernetesApi, kubeconfig

LABELS = {"app.kubernetes.io/name": "block-engine"}


class ReplicaSet:
    """The controller's part: a pod per missing replica (an IP at once); on scale-down the pods of lowest
    deletion cost go first."""

    def __init__(self, api: FakeKubernetesApi) -> None:
        self.api = api
        self.made = 0

    def __call__(self, name: str, replicas: int) -> None:
        pods = self.api.pods
        while len(pods) < replicas:
            self.made += 1
            self.api.put_pod(f"engine-{self.made}", dict(LABELS), f"10.0.0.{self.made}")
        while len(pods) > replicas:
            cost = {n: int(p["metadata"]["annotations"].get(DELETION_COST, "0")) for n, p in pods.items()}
            del pods[min(cost, key=lambda n: cost[n])]


async def test_scale_up_hands_out_the_new_pod_and_scale_down_removes_that_pod(
    tmp_path: Path, monkeypatch
) -> None:
    api = await FakeKubernetesApi("llm").start()
    try:
        path = tmp_path / "kubeconfig"
        path.write_text(kubeconfig(api.url))
        monkeypatch.setenv("KUBECONFIG", str(path))
        api.put_deployment("block-engine", 1, LABELS, 8000)
        api.on_scale = ReplicaSet(api)
        api.on_scale("block-engine", 1)  # engine-1, 10.0.0.1, serving before the router starts
        config = ProvisionConfig(
            mode="reactive",
            slo_e2e=5,
            max_instances=4,
            provider="kubernetes",
            k8s_deployment="llm/block-engine",
        )
        provider = config.make_provider()
        assert isinstance(provider, KubernetesDeployment)
        provider.poll_s = 0.02

        first, second = await provider.acquire(), await provider.acquire()
        assert (first, second) == ("http://10.0.0.2:8000", "http://10.0.0.3:8000")
        assert api.deployments["block-engine"]["spec"]["replicas"] == 3

        await provider.release(first)  # the router drained it: it goes, engine-1 and engine-3 stay
        assert api.deployments["block-engine"]["spec"]["replicas"] == 2
        assert set(api.pods) == {"engine-1", "engine-3"}
        await provider.release("http://10.0.0.1:8000")  # not acquired here: found by its IP
        assert set(api.pods) == {"engine-3"}
        patches = [r for r in api.requests if r.startswith("PATCH")]
        assert any("/pods/engine-2" in r for r in patches) and any(r.endswith("/scale") for r in patches)
        await provider.close()
    finally:
        await api.stop()


async def test_refusals_are_provision_errors(tmp_path: Path, monkeypatch) -> None:
    api = await FakeKubernetesApi("llm").start()
    try:
        path = tmp_path / "kubeconfig"
        path.write_text(kubeconfig(api.url))
        monkeypatch.setenv("KUBECONFIG", str(path))
        provider = make_provider("kubernetes", k8s_deployment="llm/missing", hook_timeout_s=1.0)
        with pytest.raises(ProvisionError, match="not found"):
            await provider.acquire()
        await provider.close()
    finally:
        await api.stop()
    with pytest.raises(ValueError, match="k8s-deployment"):
        ProvisionConfig(mode="reactive", slo_e2e=5, max_instances=2, provider="kubernetes")
