"""Every module of the package imports: commands import their modules lazily (`block --help` stays fast),
so a module only a long benchmark or the real-vLLM suite runs would otherwise fail first for a user."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import block

OPTIONAL = {"torch", "ray"}  # the `train` and `ray` extras: their modules say which extra they need


def all_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(block.__path__, "block."))


@pytest.mark.parametrize("name", all_modules())
def test_module_imports(name: str) -> None:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in OPTIONAL:
            raise
        pytest.skip(f"{name} needs the optional {e.name}")
