"""The OpenAI / vLLM HTTP API as Block's router and engine both speak it: the error shape
(errors.py), the prompt token count through the chat template (prompt_tokens.py) and the request
fields both parse and validate the same way (request.py)."""
