"""The global router: an OpenAI-compatible proxy that picks an instance per request by a policy."""
