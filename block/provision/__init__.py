"""Auto-provisioning: add and retire instances from the same forecasts the router routes with.

controller.py decides (pure, clock-agnostic); providers act (static standby pool, local emulated engines,
command hooks); autoscaler.py drives both inside the live router; sim.py drives the controller inside the
cluster simulator; experiment.py is `block experiment provision` (the paper's Figure 8).
"""

from block.provision.controller import (
    PoolCounts,
    ProvisionController,
    ProvisionDecision,
    ProvisionSettings,
)

__all__ = ["PoolCounts", "ProvisionController", "ProvisionDecision", "ProvisionSettings"]
