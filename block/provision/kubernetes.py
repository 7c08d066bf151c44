"""Provider `kubernetes`: scale a Deployment of engines through the Kubernetes API (lightkube):
`--provider kubernetes --k8s-deployment NAMESPACE/NAME`.

- acquire: replicas + 1 on the Deployment's scale subresource, then the first pod of the Deployment that was
  not there before and is not handed out yet, as soon as it has an IP: http://POD_IP:PORT (the template's
  container port named `http`, else its first). The router health-checks it like any new instance, and
  releases it after --start-timeout-s if it never gets healthy.
- release(url): the pod with that IP gets the annotation controller.kubernetes.io/pod-deletion-cost=-1000
  (the ReplicaSet removes the pods of lowest cost first), then replicas - 1: the pod the router drained
  goes, not another one still serving.
In a pod it uses its service account (RBAC: deployments/scale get and patch, pods list and patch); elsewhere
$KUBECONFIG. The router does not need --discover with it: the provisioner adds what it acquires.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from lightkube import AsyncClient, KubeConfig
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Pod

from block.provision.provider import ProvisionError

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


def parse_target(target: str | None) -> tuple[str, str]:
    namespace, _, name = (target or "").partition("/")
    if not namespace or not name or "/" in name:
        raise ValueError(f"--k8s-deployment: expected NAMESPACE/NAME, got {target!r}")
    return namespace, name


class KubernetesDeployment:
    name = "kubernetes"

    def __init__(
        self, target: str, config: KubeConfig | None = None, timeout_s: float = 300.0, poll_s: float = 1.0
    ) -> None:
        self.namespace, self.deployment = parse_target(target)
        self.config = config  # None: in-cluster service account, else $KUBECONFIG / ~/.kube/config
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.handed: dict[str, str] = {}  # URL -> pod name, for the instances acquired here
        self._client: AsyncClient | None = None
        self._scaling = asyncio.Lock()  # one read-modify-write of the replica count at a time

    @property
    def client(self) -> AsyncClient:
        if self._client is None:
            config = self.config if self.config is not None else KubeConfig.from_env()
            self._client = AsyncClient(config, namespace=self.namespace, trust_env=False)
        return self._client

    async def acquire(self) -> str:
        try:
            deployment = await self.client.get(Deployment, self.deployment, namespace=self.namespace)
            labels = dict(deployment.spec.selector.matchLabels or {})
            port = _http_port(deployment)
            before = {p.metadata.name for p in await self._pods(labels)}
            await self._scale_by(+1)
            deadline = time.monotonic() + self.timeout_s
            while time.monotonic() < deadline:
                taken = set(self.handed.values())
                for pod in await self._pods(labels):
                    name = pod.metadata.name
                    ip = pod.status.podIP if pod.status is not None else None
                    if (
                        name not in before
                        and name not in taken
                        and ip
                        and pod.metadata.deletionTimestamp is None
                    ):
                        url = f"http://{ip}:{port}"
                        self.handed[url] = name
                        return url
                await asyncio.sleep(self.poll_s)
        except ProvisionError:
            raise
        except Exception as e:  # the API's refusals (RBAC, not found) and transport errors alike
            raise ProvisionError(
                f"kubernetes: scale-up of {self.namespace}/{self.deployment} failed: {e}"
            ) from e
        raise ProvisionError(f"kubernetes: no new pod with an IP within {self.timeout_s:g} s")

    async def release(self, url: str) -> None:
        url = url.rstrip("/")
        try:
            pod = self.handed.pop(url, None) or await self._pod_at(url)
            if pod is not None:
                patch = {"metadata": {"annotations": {DELETION_COST: "-1000"}}}
                await self.client.patch(Pod, pod, patch, namespace=self.namespace)
            await self._scale_by(-1)
        except Exception as e:
            raise ProvisionError(
                f"kubernetes: scale-down of {self.namespace}/{self.deployment} failed: {e}"
            ) from e

    def standby(self) -> list[str]:
        return []

    async def close(self) -> None:
        # The pods belong to the Deployment: they outlive the router.
        if self._client is not None:
            await self._client.close()

    async def _scale_by(self, delta: int) -> int:
        async with self._scaling:
            scale = await self.client.get(Deployment.Scale, self.deployment, namespace=self.namespace)
            replicas = max(0, (scale.spec.replicas or 0) + delta)
            patch = {"spec": {"replicas": replicas}}
            await self.client.patch(Deployment.Scale, self.deployment, patch, namespace=self.namespace)
            return replicas

    async def _pods(self, labels: dict[str, str]) -> list[Any]:
        return [p async for p in self.client.list(Pod, namespace=self.namespace, labels=labels)]

    async def _pod_at(self, url: str) -> str | None:
        """The pod of this Deployment whose IP the URL names (an instance acquired before a restart)."""
        deployment = await self.client.get(Deployment, self.deployment, namespace=self.namespace)
        for pod in await self._pods(dict(deployment.spec.selector.matchLabels or {})):
            ip = pod.status.podIP if pod.status is not None else None
            if ip and url.startswith(f"http://{ip}:"):
                return pod.metadata.name
        return None


def _http_port(deployment: Any) -> int:
    ports = [p for c in deployment.spec.template.spec.containers for p in (c.ports or [])]
    named = [p.containerPort for p in ports if p.name == "http"]
    if named or ports:
        return (named or [ports[0].containerPort])[0]
    raise ProvisionError("kubernetes: the Deployment's pod template declares no container port")


def _why(error: Exception) -> str:
    """The API server's own message (its Status) where there is one."""
    status = getattr(error, "status", None)
    return getattr(status, "message", None) or str(error)
