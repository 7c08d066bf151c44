"""A fake Kubernetes API server for the tests: real HTTP on 127.0.0.1, speaking the documented list/watch
protocol (https://kubernetes.io/docs/reference/using-api/api-concepts/) for EndpointSlices and Pods, and the
Deployment scale subresource. Not a cluster: no controllers, no auth; the test plays the controllers by
calling put_slice / delete_slice / put_pod.

Watch: `?watch=true` streams one JSON object per line, {"type": ADDED|MODIFIED|DELETED|ERROR, "object": ...};
from `resourceVersion` on, or, without one, ADDED for every object that exists, then changes. A watch from
a version older than the last compact() gets the ERROR event with a 410 Status, as the real server does
after etcd compaction. close_watches() ends every open watch (an API server restart)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

SLICES = "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
PODS = "/api/v1/namespaces/{ns}/pods"


def matches(labels: dict[str, str], selector: str | None) -> bool:
    """Equality-based label selector (k=v, k==v, k!=v, k, !k), as the API server reads it."""
    for term in (selector or "").split(","):
        term = term.strip()
        if not term:
            continue
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k) != v:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def endpoint_slice(
    name: str, service: str, port: int, endpoints: list[dict[str, Any]], predictor_port: int | None = None
) -> dict[str, Any]:
    """An EndpointSlice as the EndpointSlice controller writes it for a Service's pods."""
    ports = [{"name": "http", "port": port, "protocol": "TCP"}]
    if predictor_port is not None:
        ports.append({"name": "predictor", "port": predictor_port, "protocol": "TCP"})
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    }


def endpoint(address: str, pod: str, ready: bool = True, terminating: bool = False) -> dict[str, Any]:
    return {
        "addresses": [address],
        "conditions": {"ready": ready, "serving": ready or terminating, "terminating": terminating},
        "targetRef": {"kind": "Pod", "name": pod},
    }


class FakeKubernetesApi:
    def __init__(self, namespace: str = "default") -> None:
        self.namespace = namespace
        self.version = 0
        self.compacted = 0  # watches from a version below this get 410 Gone
        self.slices: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.deployments: dict[str, dict[str, Any]] = {}
        self.events: list[tuple[int, str, dict[str, Any]]] = []  # (version, type, slice), for watches
        self.changed = asyncio.Condition()
        self.requests: list[str] = []  # "METHOD path?query", to assert what a client asked
        self.on_scale: Callable[[str, int], None] | None = None  # the test's ReplicaSet controller
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- the test's side -----------------------------------------------------------------------

    async def start(self) -> FakeKubernetesApi:
        app = web.Application()
        ns = "/{ns}"
        app.router.add_get(SLICES.replace("/{ns}", ns), self._slices)
        app.router.add_get(PODS.replace("/{ns}", ns), self._list_pods)
        app.router.add_get(PODS.replace("/{ns}", ns) + "/{name}", self._get_pod)
        app.router.add_patch(PODS.replace("/{ns}", ns) + "/{name}", self._patch_pod)
        deployments = "/apis/apps/v1/namespaces/{ns}/deployments/{name}"
        app.router.add_get(deployments, self._get_deployment)
        app.router.add_get(deployments + "/scale", self._get_scale)
        app.router.add_patch(deployments + "/scale", self._patch_scale)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        self.close_watches()
        if self._runner is not None:
            await self._runner.cleanup()

    async def put_slice(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        await self._change("MODIFIED" if name in self.slices else "ADDED", obj)

    async def delete_slice(self, name: str) -> None:
        await self._change("DELETED", self.slices[name])

    def put_pod(self, name: str, labels: dict[str, str], ip: str | None = None) -> None:
        self.version += 1
        self.pods[name] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": labels,
                "annotations": {},
                "resourceVersion": str(self.version),
            },
            "status": {"podIP": ip} if ip else {},
        }

    def put_deployment(self, name: str, replicas: int, match_labels: dict[str, str], port: int) -> None:
        self.deployments[name] = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": match_labels},
                "template": {
                    "metadata": {"labels": match_labels},
                    "spec": {
                        "containers": [{"name": "engine", "ports": [{"name": "http", "containerPort": port}]}]
                    },
                },
            },
        }

    def compact(self) -> None:
        self.compacted = self.version + 1

    def close_watches(self) -> None:
        self._closing.set()
        self._closing = asyncio.Event()

    async def _change(self, kind: str, obj: dict[str, Any]) -> None:
        async with self.changed:
            self.version += 1
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = str(self.version)
            obj["metadata"].setdefault("namespace", self.namespace)
            if kind == "DELETED":
                self.slices.pop(obj["metadata"]["name"], None)
            else:
                self.slices[obj["metadata"]["name"]] = obj
            self.events.append((self.version, kind, obj))
            self.changed.notify_all()

    # -- the API -------------------------------------------------------------------------------

    def _log(self, request: web.Request) -> None:
        self.requests.append(f"{request.method} {request.path_qs}")

    async def _slices(self, request: web.Request) -> web.StreamResponse:
        self._log(request)
        selector = request.query.get("labelSelector")
        if request.query.get("watch") in ("true", "1"):
            return await self._watch(request, selector)
        items = [s for s in self.slices.values() if matches(s["metadata"]["labels"], selector)]
        return _json(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSliceList",
                "metadata": {"resourceVersion": str(self.version)},
                "items": items,
            }
        )

    async def _watch(self, request: web.Request, selector: str | None) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        since_text = request.query.get("resourceVersion")
        deadline = time.monotonic() + float(request.query.get("timeoutSeconds", "60"))
        closing = self._closing

        async def send(kind: str, obj: dict[str, Any]) -> None:
            await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

        if since_text and int(since_text) < self.compacted:
            gone = {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "reason": "Expired",
                "code": 410,
            }
            await send("ERROR", {**gone, "message": f"too old resource version: {since_text}"})
            return response
        if since_text:
            since = int(since_text)
        else:  # no version: the current objects as ADDED first
            since = self.version
            for obj in list(self.slices.values()):
                if matches(obj["metadata"]["labels"], selector):
                    await send("ADDED", obj)
        while not closing.is_set() and time.monotonic() < deadline:
            for version, kind, obj in [e for e in self.events if e[0] > since]:
                since = version
                if matches(obj["metadata"]["labels"], selector):
                    await send(kind, obj)
            async with self.changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), 0.1)
        return response

    async def _list_pods(self, request: web.Request) -> web.Response:
        self._log(request)
        selector = request.query.get("labelSelector")
        items = [p for p in self.pods.values() if matches(p["metadata"]["labels"], selector)]
        return _json(
            {
                "apiVersion": "v1",
                "kind": "PodList",
                "metadata": {"resourceVersion": str(self.version)},
                "items": items,
            }
        )

    async def _get_pod(self, request: web.Request) -> web.Response:
        self._log(request)
        pod = self.pods.get(request.match_info["name"])
        if pod is None:
            return _not_found("pods", request.match_info["name"])
        return _json(pod)

    async def _patch_pod(self, request: web.Request) -> web.Response:
        self._log(request)
        pod = self.pods.get(request.match_info["name"])
        if pod is None:
            return _not_found("pods", request.match_info["name"])
        patch = await request.json()
        pod["metadata"]["annotations"].update((patch.get("metadata") or {}).get("annotations") or {})
        return _json(pod)

    async def _get_deployment(self, request: web.Request) -> web.Response:
        self._log(request)
        deployment = self.deployments.get(request.match_info["name"])
        if deployment is None:
            return _not_found("deployments.apps", request.match_info["name"])
        return _json(deployment)

    def _scale(self, name: str) -> dict[str, Any]:
        replicas = self.deployments[name]["spec"]["replicas"]
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {"replicas": replicas},
            "status": {"replicas": replicas},
        }

    async def _get_scale(self, request: web.Request) -> web.Response:
        self._log(request)
        name = request.match_info["name"]
        if name not in self.deployments:
            return _not_found("deployments.apps", name)
        return _json(self._scale(name))

    async def _patch_scale(self, request: web.Request) -> web.Response:
        self._log(request)
        name = request.match_info["name"]
        if name not in self.deployments:
            return _not_found("deployments.apps", name)
        replicas = int((await request.json())["spec"]["replicas"])
        self.deployments[name]["spec"]["replicas"] = replicas
        if self.on_scale is not None:
            self.on_scale(name, replicas)
        return _json(self._scale(name))


def _not_found(kind: str, name: str) -> web.Response:
    status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}
    return _json({**status, "message": f'{kind} "{name}" not found'}, status=404)


def kubeconfig(server: str) -> str:
    """A kubeconfig (YAML) for the fake server: plain HTTP, no credentials."""
    return (
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
        f"clusters:\n- name: fake\n  cluster:\n    server: {server}\n"
        "users:\n- name: nobody\n  user: {}\n"
        "contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: nobody\n"
    )


def _json(obj: dict[str, Any], status: int = 200) -> web.Response:
    # exactly "application/json", as the API server sends (clients read a Status only then)
    return web.Response(
        body=json.dumps(obj).encode(), status=status, headers={"Content-Type": "application/json"}
    )
