"""The data layer: what the router, the simulator and the sidecar know about instances.

tracker.py (one InstanceTracker per instance), arrival_log.py (who was routed when), sources/ (where an
instance's state comes from), listeners.py (who hears of routed / token / finished events), filters.py
(which instances a decision may use), forecasts.py (one decision's forecasts: deadline, budget, sidecar
or in-process).
"""
