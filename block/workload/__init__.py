"""Workloads: datasets and traces as lists of Samples, and arrival processes."""

from block.workload.arrivals import arrival_times, scale_trace
from block.workload.load import SPEC_HELP, load_workload
from block.workload.sample import Sample
from block.workload.sharegpt import load_sharegpt
from block.workload.tokenizer import Tokenizer, get_tokenizer

__all__ = [
    "SPEC_HELP",
    "Sample",
    "Tokenizer",
    "arrival_times",
    "get_tokenizer",
    "load_sharegpt",
    "load_workload",
    "scale_trace",
]
