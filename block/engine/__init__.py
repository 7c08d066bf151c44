"""The engine emulator: the replica model in real time behind a vLLM-compatible HTTP server.

Run it with `block engine --profile NAME --port 8001` (or `python -m block.engine ...`); benchmark it
against its own profile with `block engine bench`. In process: `block.engine.server.BackgroundEngine`.

HTTP contract (what a vLLM client and Block's router may rely on):

- POST /v1/completions, /v1/chat/completions: OpenAI/vLLM bodies and responses, streaming (one SSE
  event per token; the last token's event carries finish_reason; a usage chunk with
  stream_options.include_usage; `data: [DONE]`) or not (choices + usage). `n` must be 1. Prompt: a
  string (llama3 tokens + <|begin_of_text|>), token ids, or one-element batches of either; chat:
  messages counted through the Llama 3 chat template (see prompt_tokens.py). `max_tokens` (chat:
  also `max_completion_tokens`) with `ignore_eos: true` gives exactly that many tokens, finish_reason
  "length"; otherwise a ShareGPT-like sampled length (output_lengths.py) capped by max_tokens and by
  what fits in the context and the KV cache; "stop" when the sample ended it. No max_tokens: up to
  the end of the context (vLLM >= 0.8). `model` must be the served name (or left out).
- Block extras: `expected_output_tokens` (body) or `x-block-expected-output-tokens` (header) is kept
  with the request and reported in /state; `x-block-request-id` sets the request id (else a uuid4).
- 400 {"error": {"message", "type": "BadRequestError", "param", "code": 400}} for bad JSON or
  types, a missing prompt/messages, what vLLM refuses (max_tokens < 1, min_tokens > max_tokens,
  temperature < 0, top_p outside (0, 1], a prompt >= max_model_len, prompt + max_tokens over
  max_model_len), or a request needing more KV blocks than exist (block/openai_api/request.py);
  404 "The model `X` does not exist." (type NotFoundError) for a model it does not serve; 405 JSON.
- GET /v1/models, /health (200, empty; 503 if the engine loop died), /version, /metrics
  (Prometheus text, vLLM names, label model_name; own registry per server).
- GET /state: Snapshot.to_dict() (config, profile, running, waiting with id, arrival_time,
  prompt_tokens, computed_tokens, output_tokens, expected_output_tokens; free_blocks,
  num_preemptions) with `now` = the engine clock now, plus `step_in_progress_until` while a step
  runs (the listed progress is then the progress before that step). Times are seconds on the
  engine's monotonic clock since it started.
"""
