"""SLO-aware admission: a policy-independent stage in front of the choice, shared by router and simulator.

target.py (what a request must meet: its TTFT and E2E targets and its priority), settings.py (the mode,
the held-queue bound and the default targets), gate.py (does any instance's forecast meet the target,
and when to come back if not), reserve.py (the KV-cache room a lower priority must leave for the prompts
of the higher ones), held.py (the bounded queue of held requests, ordered by priority, then
deadline). The router (block/router/admission.py) and the simulator (block/sim/admission.py) each hold
requests and re-check them on the events that change state, with these same parts.
"""

from block.admission.gate import Gate, Verdict
from block.admission.held import Held, HeldQueue
from block.admission.settings import MODES, AdmissionSettings
from block.admission.target import Target

__all__ = ["MODES", "AdmissionSettings", "Gate", "Held", "HeldQueue", "Target", "Verdict"]
