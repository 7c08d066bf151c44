"""The paper's experiments, simulated (`--mode sim`) or live (`--mode live`)."""
