"""Pod discovery on Kubernetes (`block router --discover k8s:NAMESPACE/LABEL_SELECTOR`): the EndpointSlices
of the engine Service make the fleet, listed then watched (the informer pattern, with lightkube).

- An endpoint whose condition `ready` is true joins: InstancePool.add(http://ADDRESS:PORT). The slice's port
  named `http` (else its first) is the engine; one named `predictor` is the Block predictor sidecar.
- Any other endpoint of ours (terminating, failing its readiness probe, gone from every slice) drains: out of
  rotation for new requests while those in flight finish; it leaves the pool once none is left there (or
  after the router's drain timeout). An endpoint ready again while draining goes back in rotation.
- Profile: the pod's label `block/profile` (read once per pod; needs `get` on pods), else the router's
  --profile. Block engines name their own profile in /state, which wins as for any instance.
- A broken watch (API server restart, 410 Gone) is followed by a new list after a back-off: the list is the
  truth, and instances of ours it does not show drain.
Instances from --instance, --config or POST /instances are never touched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from lightkube import AsyncClient, KubeConfig
from lightkube import operators as op
from lightkube.core.exceptions import ConfigError
from lightkube.resources.core_v1 import Pod
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.types import OnErrorAction, OnErrorResult

from block.router.instance_pool import InstancePool

log = logging.getLogger("block.router.discovery")

PROFILE_LABEL = "block/profile"
ENGINE_PORT = "http"
PREDICTOR_PORT = "predictor"
RETRY_S = 2.0  # after a failed list or a broken watch
WATCH_SERVER_TIMEOUT_S = 300  # the API server closes a watch after this; lightkube resumes it
REAP_EVERY_S = 0.1  # how often draining instances are checked for requests left


@dataclass(frozen=True, slots=True)
class DiscoverySpec:
    namespace: str
    selector: list[tuple[str, Any]]  # lightkube label selector pairs
    text: str


def parse_spec(spec: str) -> DiscoverySpec:
    """`k8s:NAMESPACE/LABEL_SELECTOR`, the selector equality-based: `k=v`, `k==v`, `k!=v`, `k`, `!k`,
    comma-separated (the labels of the EndpointSlices: `kubernetes.io/service-name=NAME` always works)."""
    kind, sep, rest = spec.partition(":")
    namespace, slash, text = rest.partition("/")
    if kind != "k8s" or not sep or not slash or not namespace or not text.strip():
        raise ValueError(f"--discover: expected k8s:NAMESPACE/LABEL_SELECTOR, got {spec!r}")
    pairs: list[tuple[str, Any]] = []
    for term in (t.strip() for t in text.split(",")):
        if not term or " in " in term or "(" in term:
            raise ValueError(f"--discover: unsupported selector term {term!r} (equality-based only)")
        if "!=" in term:
            key, value = term.split("!=", 1)
            pairs.append((key.strip(), op.not_equal(value.strip())))
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            pairs.append((key.strip(), value.strip()))
        elif term.startswith("!"):
            pairs.append((term[1:].strip(), op.not_exists()))
        else:
            pairs.append((term, None))  # exists
    return DiscoverySpec(namespace, pairs, text)


def kube_config() -> KubeConfig:
    """In a pod its service account, else $KUBECONFIG or ~/.kube/config; ValueError when none is there."""
    try:
        return KubeConfig.from_env()
    except ConfigError as e:
        raise ValueError(f"--discover: no Kubernetes credentials (not in a pod, no kubeconfig): {e}") from e


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    predictor_url: str | None
    ready: bool
    pod: str | None  # targetRef name when it is a Pod


def endpoints_of(eps: Any) -> list[Endpoint]:
    """One EndpointSlice's endpoints (IPv4/IPv6 addresses; an FQDN slice is used as written)."""
    ports = {p.name or "": p.port for p in (eps.ports or []) if p.port}
    engine_port = ports.get(ENGINE_PORT) or next(iter(ports.values()), None)
    if engine_port is None:
        return []
    predictor_port = ports.get(PREDICTOR_PORT)
    out = []
    for ep in eps.endpoints or []:
        if not ep.addresses:
            continue
        host = ep.addresses[0]
        host = f"[{host}]" if eps.addressType == "IPv6" else host
        cond = ep.conditions
        # Kubernetes: a nil `ready` means ready (unknown state is treated as ready).
        ready = cond is None or cond.ready is None or bool(cond.ready)
        pod = ep.targetRef.name if ep.targetRef is not None and ep.targetRef.kind == "Pod" else None
        out.append(
            Endpoint(
                f"http://{host}:{engine_port}",
                f"http://{host}:{predictor_port}" if predictor_port else None,
                ready,
                pod,
            )
        )
    return out


class Discovery:
    def __init__(
        self, spec: DiscoverySpec, pool: InstancePool, config: KubeConfig | None = None, drain_s: float = 30.0
    ) -> None:
        self.spec = spec
        self.pool = pool
        self.config = config  # None: in-cluster service account, else $KUBECONFIG / ~/.kube/config
        self.drain_s = drain_s
        self.slices: dict[str, list[Endpoint]] = {}  # EndpointSlice name -> its endpoints
        self.owned: dict[str, str] = {}  # instance URL -> instance id, for the instances discovery added
        self.draining_since: dict[str, float] = {}  # instance id -> when discovery set it draining
        self.profiles: dict[str, str | None] = {}  # pod name -> its profile label
        self.client: AsyncClient | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        config = self.config if self.config is not None else kube_config()
        logging.getLogger("httpx2").setLevel(logging.WARNING)  # lightkube's client: not a line per request
        self.client = AsyncClient(config, namespace=self.spec.namespace, trust_env=False)
        self._tasks = [
            asyncio.create_task(self._run(), name="discovery"),
            asyncio.create_task(self._reap(), name="discovery-reap"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.client is not None:
            await self.client.close()

    # -- list, then watch ----------------------------------------------------------------------

    async def _run(self) -> None:
        assert self.client is not None
        while True:
            try:
                listing = self.client.list(
                    EndpointSlice, namespace=self.spec.namespace, labels=self.spec.selector
                )
                slices = {s.metadata.name: endpoints_of(s) async for s in listing}
                self.slices = slices
                await self._reconcile()
                version = listing.resourceVersion if slices else None
                log.info("discovery: %d slice(s) for %s", len(slices), self.spec.text)
                async for kind, eps in self.client.watch(
                    EndpointSlice,
                    namespace=self.spec.namespace,
                    labels=self.spec.selector,
                    resource_version=version,
                    server_timeout=WATCH_SERVER_TIMEOUT_S,
                    on_error=_stop_watch,
                ):
                    if kind == "DELETED":
                        self.slices.pop(eps.metadata.name, None)
                    elif kind in ("ADDED", "MODIFIED"):
                        self.slices[eps.metadata.name] = endpoints_of(eps)
                    else:
                        continue  # BOOKMARK
                    await self._reconcile()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the API server away, RBAC, a malformed object: retry, never crash
                log.warning("discovery: %s: %s (retrying in %g s)", self.spec.text, e, RETRY_S)
            await asyncio.sleep(RETRY_S)

    async def _reconcile(self) -> None:
        """Make the pool match the slices: ready endpoints in rotation, the rest of ours draining."""
        ready: dict[str, Endpoint] = {}
        for endpoints in self.slices.values():
            for ep in endpoints:
                if ep.ready:
                    ready[ep.url] = ep
        pods = {ep.pod for endpoints in self.slices.values() for ep in endpoints}
        self.profiles = {pod: p for pod, p in self.profiles.items() if pod in pods}  # pods come and go
        for url, ep in ready.items():
            inst_id = self.owned.get(url)
            inst = self.pool.instances.get(inst_id) if inst_id else None
            if inst is None:
                await self._add(ep)
            elif inst.draining:
                self.draining_since.pop(inst.id, None)
                self.pool.set_draining(inst, False)
                log.info("discovery: %s ready again, back in rotation", inst.id)
        for url, inst_id in list(self.owned.items()):
            inst = self.pool.instances.get(inst_id)
            if inst is None:  # removed by hand (DELETE /instances)
                del self.owned[url]
            elif url not in ready and not inst.draining:
                self.pool.set_draining(inst, True)
                self.draining_since[inst.id] = time.monotonic()
                log.info("discovery: %s not ready or terminating: draining", inst.id)

    async def _add(self, ep: Endpoint) -> None:
        profile = await self._profile(ep.pod)
        try:
            inst = self.pool.add(ep.url, ep.predictor_url, profile=profile)
        except (ValueError, KeyError) as e:  # not allowed, or configured by other means
            log.warning("discovery: not adding %s: %s", ep.url, e)
            return
        self.owned[ep.url] = inst.id
        log.info("discovery: %s joins (pod %s, profile %s)", inst.id, ep.pod, profile or "-")

    async def _profile(self, pod: str | None) -> str | None:
        """The pod's profile label, else the router's --profile (None there too: the instance says)."""
        if pod is not None and pod not in self.profiles:
            assert self.client is not None
            try:
                obj = await self.client.get(Pod, pod, namespace=self.spec.namespace)
                self.profiles[pod] = (obj.metadata.labels or {}).get(PROFILE_LABEL)
            except Exception as e:  # no RBAC for pods, the pod gone, the API away: the default
                log.warning("discovery: no profile label for pod %s: %s", pod, e)
                return self.pool.config.profile
        label = self.profiles.get(pod) if pod is not None else None
        return label or self.pool.config.profile

    # -- draining instances leave once idle ----------------------------------------------------

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(REAP_EVERY_S)
            now = time.monotonic()
            for inst_id, since in list(self.draining_since.items()):
                inst = self.pool.instances.get(inst_id)
                if inst is None or not inst.draining:
                    self.draining_since.pop(inst_id, None)
                    continue
                left = inst.tracker.in_flight if inst.tracker is not None else 0
                if left == 0 or now - since >= self.drain_s:
                    self.draining_since.pop(inst_id, None)
                    self.owned = {u: i for u, i in self.owned.items() if i != inst_id}
                    await self.pool.remove(inst_id)
                    log.info("discovery: %s removed (%d request(s) still in flight)", inst_id, left)


def _stop_watch(error: Exception, count: int) -> OnErrorResult:
    """A broken watch ends the iteration: the caller lists again (a 410 Gone needs that anyway)."""
    log.info("discovery: watch ended: %s", error)
    return OnErrorResult(OnErrorAction.STOP)
