"""The providers by name (`--provider`): each is one file implementing `block.provision.provider.Provider`."""

from __future__ import annotations

from block.provision.command_hooks import CommandHooks
from block.provision.local_emulator import LocalEmulators
from block.provision.provider import Provider, ProvisionError
from block.provision.static_pool import StaticPool

KUBERNETES = "kubernetes"  # block.provision.kubernetes, imported on use (lightkube)
PROVIDERS = (StaticPool.name, LocalEmulators.name, CommandHooks.name, KUBERNETES)

__all__ = ["PROVIDERS", "Provider", "ProvisionError", "make_provider"]


def make_provider(
    kind: str,
    *,
    standby: list[str] | None = None,
    scale_up_cmd: str | None = None,
    scale_down_cmd: str | None = None,
    hook_timeout_s: float = 300.0,
    emulator_profile: str = "tiny-fast",
    k8s_deployment: str | None = None,
) -> Provider:
    if kind == StaticPool.name:
        return StaticPool(standby or [])
    if kind == LocalEmulators.name:
        return LocalEmulators(emulator_profile)
    if kind == CommandHooks.name:
        return CommandHooks(scale_up_cmd or "", scale_down_cmd, hook_timeout_s)
    if kind == KUBERNETES:
        from block.provision.kubernetes import KubernetesDeployment

        return KubernetesDeployment(k8s_deployment or "", timeout_s=hook_timeout_s)
    raise ValueError(f"unknown provider {kind!r} (known: {', '.join(PROVIDERS)})")
