"""Auto-provisioning: add and retire instances from the same forecasts the router routes with.

controller.py decides (pure, clock-agnostic); providers act (static standby pool, local emulated engines,
command hooks); sim.py drives the controller inside the cluster simulator, as a request listener and a
filter. Elsewhere, on top of this package: block/router/autoscaler.py drives both inside the live router;
block/experiments/provision.py is `block experiment provision` (the paper's Figure 8).
"""

from block.provision.controller import (
    PoolCounts,
    ProvisionController,
    ProvisionDecision,
    ProvisionSettings,
)

__all__ = ["PoolCounts", "ProvisionController", "ProvisionDecision", "ProvisionSettings"]
