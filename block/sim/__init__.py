"""Cluster simulator: many replicas and one routing policy in one event loop, in virtual time."""

from block.sim.config import SimConfig
from block.sim.requests import SimRequests
from block.sim.simulator import SimOutcome, simulate

__all__ = ["SimConfig", "SimOutcome", "SimRequests", "simulate"]
