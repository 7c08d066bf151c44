"""The replica model: one vLLM-style instance in virtual time, shared by engine, predictor and simulator.

`Replica` steps it (replica.py, over the KV operations of kv_cache.py, with vLLM V1's prefix cache of
prefix_cache.py when `ReplicaConfig.enable_prefix_caching`); `FastReplica` (fast_replica.py)
is the forecast's copy with the same rules and skip-ahead over decode stretches. Both time steps with
the profile's `StepCost` (block/profiles/step_cost.py).
"""

from block.replica.batch import Batch
from block.replica.config import ReplicaConfig
from block.replica.fast_replica import DeadlineExceeded, FastReplica, SimRequest, SimulationStuck
from block.replica.kv_cache import KVCache, blocks_for
from block.replica.replica import DecodeRun, DecodeSpan, Replica, StepOutcome
from block.replica.request import Request
from block.replica.snapshot import RequestState, Snapshot

__all__ = [
    "Batch",
    "DeadlineExceeded",
    "DecodeRun",
    "DecodeSpan",
    "FastReplica",
    "KVCache",
    "Replica",
    "ReplicaConfig",
    "Request",
    "RequestState",
    "SimRequest",
    "SimulationStuck",
    "Snapshot",
    "StepOutcome",
    "blocks_for",
]
