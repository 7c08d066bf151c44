"""The replica model: one vLLM-style instance in virtual time, shared by engine, predictor and simulator."""

from block.replica.batch import Batch
from block.replica.config import ReplicaConfig
from block.replica.kv_cache import KVCache, blocks_for
from block.replica.replica import DecodeRun, DecodeSpan, Replica, StepOutcome
from block.replica.request import Request
from block.replica.snapshot import RequestState, Snapshot

__all__ = [
    "Batch",
    "DecodeRun",
    "DecodeSpan",
    "KVCache",
    "Replica",
    "ReplicaConfig",
    "Request",
    "RequestState",
    "Snapshot",
    "StepOutcome",
    "blocks_for",
]
