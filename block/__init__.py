"""Block: a predictive global scheduler for fleets of LLM inference instances."""

__version__ = "0.1.0"
