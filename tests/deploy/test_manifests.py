"""deploy/kubernetes: every manifest, the base and the example overlay as rendered, checked offline against
the Kubernetes 1.37 schemas kubernetes-validate ships (strict: unknown fields fail), and against Block itself:
the router's config file loads, its --discover spec parses, the profiles named exist, the Services select
the pods, the RBAC grants what discovery reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from block.profiles import load_profile
from block.router.config import RouterConfig
from block.router.discovery import parse_spec
from tests.deploy.kustomize_lite import render

ROOT = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
K8S_VERSION = "1.37.0"
PATCHES = {"engine-vllm.yaml", "router-config.yaml"}  # the overlay's partial objects: checked once rendered


def validate(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def pick(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def test_every_base_manifest_validates() -> None:
    files = [p for p in ROOT.rglob("*.yaml") if p.name != "kustomization.yaml"]
    files = [p for p in files if not (p.parent.name == "example" and p.name in PATCHES)]
    assert len(files) >= 7
    for path in files:
        for obj in yaml.safe_load_all(path.read_text()):
            validate(obj)
    # the check has teeth: a misspelt field fails
    router = yaml.safe_load((ROOT / "base" / "router-deployment.yaml").read_text())
    router["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(router)


@pytest.mark.parametrize("layer", ["base", "overlays/example"])
def test_rendered_layer_validates_and_fits_block(layer: str, tmp_path: Path) -> None:
    objects = render(ROOT / layer)
    for obj in objects:
        validate(obj)
        if obj["kind"] != "Namespace":  # the overlay's own, outside the base's labels
            assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "block"
    router = pick(objects, "Deployment", "block-router")
    engine = pick(objects, "Deployment", "block-engine")

    # the router's --config (the ConfigMap) and --discover (its args) are what `block router` accepts
    config_map = pick(objects, "ConfigMap", "block-router-config")
    (tmp_path / "router.yaml").write_text(config_map["data"]["router.yaml"])
    container = pod_spec(router)["containers"][0]
    args = container["args"]
    assert args[args.index("--config") + 1] == "/etc/block/router.yaml"
    spec = args[args.index("--discover") + 1].replace("$(POD_NAMESPACE)", "llm")
    assert parse_spec(spec).selector == [("kubernetes.io/service-name", "block-engine")]
    config = RouterConfig.build(tmp_path / "router.yaml", discover=spec)
    assert config.host == "0.0.0.0" and config.policy == "block"
    assert load_profile(config.profile) is not None
    assert container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert router["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"

    # the Services select the pods; the engine Service names the ports discovery reads
    for name, deployment in (("block-router", router), ("block-engine", engine)):
        selector = pick(objects, "Service", name)["spec"]["selector"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert {p["name"] for p in pick(objects, "Service", "block-engine")["spec"]["ports"]} == {
        "http",
        "predictor",
    }
    assert load_profile(engine["spec"]["template"]["metadata"]["labels"]["block/profile"]) is not None
    for c in pod_spec(engine)["containers"]:
        assert c["readinessProbe"]["httpGet"]["path"] == "/health"

    # RBAC: the router's service account may list and watch EndpointSlices and get pods
    assert pod_spec(router)["serviceAccountName"] == "block-router"
    rules = pick(objects, "Role", "block-router-discovery")["rules"]
    slices = next(r for r in rules if "endpointslices" in r["resources"])
    assert slices["apiGroups"] == ["discovery.k8s.io"] and {"list", "watch"} <= set(slices["verbs"])
    assert any("pods" in r["resources"] and "get" in r["verbs"] for r in rules)


def test_example_overlay_changes_what_it_says() -> None:
    base = render(ROOT / "base")
    objects = render(ROOT / "overlays/example")
    assert len(objects) == len(base) + 1  # its Namespace
    for obj in objects:
        assert obj["kind"] == "Namespace" or obj["metadata"]["namespace"] == "llm"
    binding = pick(objects, "RoleBinding", "block-router-discovery")
    assert binding["subjects"][0]["namespace"] == "llm"
    router = pick(objects, "Deployment", "block-router")
    assert router["spec"]["replicas"] == 3
    assert pod_spec(router)["containers"][0]["image"] == "registry.example.com/block:0.1.0"
    engine = pick(objects, "Deployment", "block-engine")
    (container,) = pod_spec(engine)["containers"]  # the predictor sidecar is gone: stock vLLM has no /state
    assert container["image"].startswith("vllm/vllm-openai:")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"  # the base's probe, merged
    # the base itself is untouched by rendering the overlay
    assert len(pod_spec(pick(base, "Deployment", "block-engine"))["containers"]) == 2
