"""A served model's own prompt layout (`--tokenizer DIR`): a Hugging Face tokenizer directory built here
with the `tokenizers` library (a small BPE, a BOS post-processor, a chat template), read the way vLLM
reads it. The real suite checks the same layout against vLLM's own prompt counts and cache hits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from block.cli import app
from block.openai_api.errors import RequestError
from block.openai_api.hf_prompts import HFPrompts
from block.prefix import chain_hashes
from block.router.request_shape import load_prompt_layout, parse_shape

CHAT = "/v1/chat/completions"
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'tool' %}{{ raise_exception('no tools here') }}{% endif %}"
    "<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
CORPUS = [
    "the cache holds the keys and values of every token",
    "a prompt that shares a prefix with an earlier one is computed once",
    "what is a kv cache and why does prefix caching help chat",
] * 20


def build_directory(root: Path, template_in_file: bool) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    specials = ["<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=200, special_tokens=specials))
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    tok.save(str(root / "tokenizer.json"))
    config: dict = {"bos_token": {"content": "<s>"}, "eos_token": "</s>", "unk_token": "<unk>"}
    if template_in_file:
        (root / "chat_template.jinja").write_text(TEMPLATE)
    else:
        config["chat_template"] = [{"name": "default", "template": TEMPLATE}]
    (root / "tokenizer_config.json").write_text(json.dumps(config))
    return root


@pytest.fixture(params=[True, False], ids=["template-file", "template-in-config"])
def model_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    return build_directory(tmp_path, request.param)


def test_a_chat_is_the_rendered_template_tokenized_as_it_stands(model_dir: Path) -> None:
    prompts = HFPrompts.load(model_dir)
    messages = [("system", "what is a kv cache"), ("user", "the cache holds keys")]
    rendered = prompts.render(messages)
    assert rendered == "<s><|system|>\nwhat is a kv cache\n<|user|>\nthe cache holds keys\n<|assistant|>\n"
    ids = prompts.chat_ids(messages)
    assert ids == prompts.tokenizer.encode(rendered, add_special_tokens=False).ids
    assert ids.count(prompts.tokenizer.token_to_id("<s>")) == 1  # the template's BOS, none added on top


def test_a_text_prompt_gets_the_tokenizers_special_tokens(model_dir: Path) -> None:
    prompts = HFPrompts.load(model_dir)
    ids = prompts.text_ids("what is a kv cache")
    assert ids[0] == prompts.tokenizer.token_to_id("<s>")
    assert len(ids) == 1 + prompts.count("what is a kv cache")


def test_the_router_counts_and_hashes_with_the_models_layout(model_dir: Path) -> None:
    count, layout = load_prompt_layout(str(model_dir))
    history = [("user", "what is a kv cache " * 12)]
    turn1 = {"messages": [{"role": r, "content": c} for r, c in history]}
    turn2 = {"messages": [*turn1["messages"], {"role": "assistant", "content": "the cache holds keys"}]}
    turn2["messages"].append({"role": "user", "content": "why does prefix caching help chat"})
    first = parse_shape(CHAT, turn1, count, None, 10, prompt_ids=layout)
    second = parse_shape(CHAT, turn2, count, None, 10, prompt_ids=layout)
    assert first.prompt_token_ids is not None and second.prompt_token_ids is not None
    assert first.prompt_tokens == len(first.prompt_token_ids) == len(layout.chat_ids(history))
    # the follow-up resends the first turn: all its full blocks but the one the generation prompt ends
    shared = chain_hashes(first.prompt_token_ids[:-4], 4)
    assert chain_hashes(second.prompt_token_ids, 4)[: len(shared)] == shared and shared


def test_a_template_that_refuses_the_messages_is_a_client_error(model_dir: Path) -> None:
    _, layout = load_prompt_layout(str(model_dir))
    body = {"messages": [{"role": "tool", "content": "42"}]}
    with pytest.raises(RequestError, match="no tools here") as refused:
        parse_shape(CHAT, body, len, None, 10, prompt_ids=layout)
    assert refused.value.status == 400


def test_a_model_without_a_chat_template_takes_completions_only(tmp_path: Path) -> None:
    root = build_directory(tmp_path, template_in_file=True)
    (root / "chat_template.jinja").unlink()
    (root / "tokenizer_config.json").write_text("{}")
    prompts = HFPrompts.load(root)
    assert prompts.text_ids("the cache")
    with pytest.raises(RequestError, match="no chat template"):
        prompts.chat_ids([("user", "the cache")])


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "has no tokenizer.json"),
        ({"tokenizer.json": "not json"}, "not a tokenizer file"),
    ],
)
def test_a_broken_directory_is_a_clear_error(tmp_path: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=message):
        load_prompt_layout(str(tmp_path))


def test_a_template_that_does_not_compile_is_a_clear_error(tmp_path: Path) -> None:
    root = build_directory(tmp_path, template_in_file=True)
    (root / "chat_template.jinja").write_text("{% for m in messages %}")
    with pytest.raises(ValueError, match="does not compile"):
        HFPrompts.load(root)


def test_the_router_refuses_a_bad_tokenizer_in_one_line(tmp_path: Path) -> None:
    args = ["router", "--instance", "http://127.0.0.1:9", "--tokenizer", str(tmp_path)]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 2  # a usage error, as typer reports its own
    assert "has no tokenizer.json" in result.output and "Traceback" not in result.output
