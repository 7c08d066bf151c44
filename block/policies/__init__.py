"""Routing policies: pure choosers over instance views, shared by the router and the simulator."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from block.policies.base import (
    POLICIES,
    Candidates,
    Choice,
    Forecast,
    InstanceView,
    Policy,
    RoutingRequest,
    register,
)

# Importing every module of the package registers its policies: a new policy is one new file.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def make_policy(name: str, **options: Any) -> Policy:
    try:
        cls = POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r} (known: {', '.join(sorted(POLICIES))})") from None
    return cls(**options)


__all__ = [
    "POLICIES",
    "Candidates",
    "Choice",
    "Forecast",
    "InstanceView",
    "Policy",
    "RoutingRequest",
    "make_policy",
    "register",
]
