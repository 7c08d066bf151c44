"""A served model's own prompt layout, read from its Hugging Face directory: `tokenizer.json` and the
chat template, so the router's token ids match the engine's token for token.

This is what exact prefix routing on stock vLLM needs: vLLM's KV events name blocks by the token ids the
engine computed, and a prompt's blocks can only be found in that index if the router lays the prompt out
the same way. vLLM does it like this (and so does this module):
- a text prompt (/v1/completions) is tokenized with the tokenizer's special tokens (BOS, when the
  tokenizer's post-processor adds one);
- a chat (/v1/chat/completions) is first rendered to text by the model's Jinja chat template, with
  `add_generation_prompt`, the tokenizer's special-token strings as variables (`bos_token`, ...), then
  tokenized without adding special tokens (the template wrote them).

The template is rendered in Jinja's sandbox, with the settings transformers renders chat templates with
(`trim_blocks`, `lstrip_blocks`, and `raise_exception` / `tojson` / `strftime_now` available).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
TEMPLATE_FILE = "chat_template.jinja"
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


class HFPrompts:
    """Token ids of prompts as the model in `directory` sees them (a `PromptIds`)."""

    def __init__(self, tokenizer: Any, template: Any | None, special_tokens: dict[str, str]) -> None:
        self.tokenizer = tokenizer  # a `tokenizers.Tokenizer`
        self.template = template  # a compiled Jinja template, or None (the model has no chat template)
        self.special_tokens = special_tokens

    @classmethod
    def load(cls, directory: str | Path) -> HFPrompts:
        """Read `directory`; a ValueError says what is missing or broken (the router's start refuses)."""
        from tokenizers import Tokenizer

        root = Path(directory)
        tokenizer_path = root / TOKENIZER_FILE
        if not tokenizer_path.is_file():
            raise ValueError(f"{root} has no {TOKENIZER_FILE} (a Hugging Face tokenizer directory is needed)")
        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as e:
            raise ValueError(f"{tokenizer_path}: not a tokenizer file ({e})") from None
        config = _read_config(root / CONFIG_FILE)
        source = _template_source(root, config)
        template = _compile(source, root) if source is not None else None
        special = {name: text for name in SPECIAL_TOKENS if (text := _token_text(config.get(name)))}
        return cls(tokenizer, template, special)

    def count(self, text: str) -> int:
        """Tokens of `text` alone, no special tokens added (what the length estimator is given)."""
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids) if text else 0

    def text_ids(self, text: str) -> list[int]:
        """A /v1/completions text prompt: special tokens added, as vLLM tokenizes it."""
        return self.tokenizer.encode(text, add_special_tokens=True).ids if text else []

    def chat_ids(self, messages: list[tuple[str, str]]) -> list[int]:
        """A /v1/chat/completions prompt: the rendered template, tokenized as it stands."""
        return self.tokenizer.encode(self.render(messages), add_special_tokens=False).ids

    def render(self, messages: list[tuple[str, str]]) -> str:
        """The chat template applied to (role, content) pairs, with the generation prompt; a template
        that refuses the messages (many check that roles alternate) is the client's 400, as in vLLM."""
        from jinja2 import TemplateError

        from block.openai_api.errors import RequestError

        if self.template is None:
            raise RequestError("the served model has no chat template; use /v1/completions", "messages")
        chat = [{"role": role, "content": content} for role, content in messages]
        try:
            return self.template.render(messages=chat, add_generation_prompt=True, **self.special_tokens)
        except TemplateError as e:
            raise RequestError(f"the chat template refused the messages: {e}", "messages") from None


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return config


def _template_source(root: Path, config: dict[str, Any]) -> str | None:
    """The chat template: `chat_template.jinja` (newer transformers saves it there), else the config's
    `chat_template`, a string or a list of named templates (the one named "default" is used)."""
    template_file = root / TEMPLATE_FILE
    if template_file.is_file():
        return template_file.read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string, or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _compile(source: str, root: Path) -> Any:
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    def tojson(value: Any, indent: int | None = None) -> str:
        return json.dumps(value, ensure_ascii=False, indent=indent)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except TemplateError as e:
        raise ValueError(f"{root}: the chat template does not compile ({e})") from None
