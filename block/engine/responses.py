"""Response bodies and SSE chunks in the shapes vLLM's OpenAI server produces.

Streaming follows vLLM: one `data:` event per token; the event that carries the last token also
carries `finish_reason`; then, with `stream_options.include_usage`, a chunk with empty `choices`
and `usage`; then `data: [DONE]`. Chat streams open with a `{"role": "assistant", "content": ""}`
delta sent together with the first token (vLLM sends it when the first output arrives).
"""

from __future__ import annotations

from typing import Any

import orjson

from block.engine import synthetic_text
from block.engine.openai_protocol import Kind

DONE = b"data: [DONE]\n\n"


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int | None = None) -> dict[str, Any]:
    """`cached_tokens`: the prompt tokens found in the prefix cache, reported (as vLLM does with
    --enable-prompt-tokens-details) in `prompt_tokens_details`; None: not reported."""
    u: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    }
    if cached_tokens is not None:
        u["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    return u


def response_id(kind: Kind, request_id: str) -> str:
    return ("cmpl-" if kind == "completion" else "chatcmpl-") + request_id


def full_response(
    kind: Kind,
    rid: str,
    created: int,
    model: str,
    prompt_tokens: int,
    output_tokens: int,
    finish_reason: str,
    cached_tokens: int | None = None,
) -> dict[str, Any]:
    text = synthetic_text.text_of(output_tokens)
    if kind == "completion":
        choice: dict[str, Any] = {
            "index": 0,
            "text": text,
            "logprobs": None,
            "finish_reason": finish_reason,
            "stop_reason": None,
        }
        obj = "text_completion"
    else:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text, "tool_calls": []},
            "logprobs": None,
            "finish_reason": finish_reason,
            "stop_reason": None,
        }
        obj = "chat.completion"
    return {
        "id": rid,
        "object": obj,
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage(prompt_tokens, output_tokens, cached_tokens),
    }


class ChunkWriter:
    """Pre-rendered pieces of one stream's chunks; a token chunk is head + text + tail."""

    __slots__ = ("_head", "_tail", "_finish_tails", "_envelope", "_role_chunk")

    def __init__(self, kind: Kind, rid: str, created: int, model: str) -> None:
        obj = "text_completion" if kind == "completion" else "chat.completion.chunk"
        envelope = (
            b'{"id":'
            + orjson.dumps(rid)
            + b',"object":"'
            + obj.encode()
            + b'","created":'
            + str(created).encode()
            + b',"model":'
            + orjson.dumps(model)
        )
        self._envelope = envelope
        if kind == "completion":
            self._head = b"data: " + envelope + b',"choices":[{"index":0,"text":'
            close = b',"logprobs":null,"finish_reason":'
            self._tail = close + b'null,"stop_reason":null}]}\n\n'
            self._finish_tails = {
                r: close + orjson.dumps(r) + b',"stop_reason":null}]}\n\n' for r in ("length", "stop")
            }
            self._role_chunk = b""
        else:
            self._head = b"data: " + envelope + b',"choices":[{"index":0,"delta":{"content":'
            close = b'},"logprobs":null,"finish_reason":'
            self._tail = close + b"null}]}\n\n"
            self._finish_tails = {r: close + orjson.dumps(r) + b"}]}\n\n" for r in ("length", "stop")}
            self._role_chunk = (
                b"data: "
                + envelope
                + b',"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
                + b'"logprobs":null,"finish_reason":null}]}\n\n'
            )

    def first(self) -> bytes:
        """What goes before the first token chunk (the chat role delta)."""
        return self._role_chunk

    def token(self, index: int, finish_reason: str | None = None) -> bytes:
        tail = self._tail if finish_reason is None else self._finish_tails[finish_reason]
        return self._head + synthetic_text.token_json(index) + tail

    def usage(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int | None = None) -> bytes:
        return (
            b"data: "
            + self._envelope
            + b',"choices":[],"usage":'
            + orjson.dumps(usage(prompt_tokens, completion_tokens, cached_tokens))
            + b"}\n\n"
        )
