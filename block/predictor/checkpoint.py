"""A forecast's head start: the run without a candidate, up to where a candidate queued last is first seen.

On a deep queue almost all of a forecast is the queue ahead draining, and that part does not depend on
the candidate. The scheduler (fast_replica.py, the same rules as Replica) only looks at a waiting
request when it is the head of the queue or the FCFS admission loop reaches it, and admission fills
free sequence slots only: a step admits at most `max_num_seqs - len(running)` requests (in a step that
preempts, none). A request queued behind all of `waiting` therefore takes no part in any step that
starts with `len(running) + len(waiting) >= max_num_seqs`, and nothing else reads it (a decode stretch
only checks the head). Until the first step that does not, the run with a candidate is the run
without one, step for step.

`Checkpoint` is that run's state at the start of that step (`at`, seconds after the snapshot), as plans
(the form a snapshot loads in): a forecast whose candidate reaches the queue between `valid_from` (when
the last pending request does; before it, the order of arrivals differs) and `at` loads it, queues the
candidate and runs on from there. The times it gives are those of the run from the snapshot, up to the
float rounding of splitting a decode stretch elsewhere (the arrival splits one, the checkpoint not).

A request routed since is one more such candidate: `extended` queues it at the end of a checkpoint it
reached the queue before, and runs on to the next one, instead of the whole queue again.

Not used where the candidate changes the run before it is seen: prefix caching modelled (the candidate's
prompt decides which cached blocks are kept), anticipated arrivals, the harm term (it needs every
request's finish, without the candidate too).
"""

from __future__ import annotations

from dataclasses import dataclass

from block.predictor.lengths import Plan
from block.profiles.profile import Profile
from block.replica.config import ReplicaConfig
from block.replica.fast_replica import FastReplica


@dataclass(frozen=True, slots=True)
class Checkpoint:
    at: float  # start of the first step a request queued last may take part in (after the snapshot)
    valid_from: float  # the last pending request reaches the queue then (0: none after the snapshot)
    running: list[Plan]
    waiting: list[Plan]
    steps: int  # engine steps simulated to get here (a forecast's count goes on from them)
    events: int
    preemptions: int = 0  # in the run from the snapshot to here

    def covers(self, arrival: float) -> bool:
        """Whether a candidate reaching the queue at `arrival` (after the snapshot) joins this run."""
        return self.valid_from <= arrival <= self.at

    def replica(self, config: ReplicaConfig, profile: Profile) -> FastReplica:
        """A FastReplica in this state, ready for a candidate to be queued."""
        sim = FastReplica(config, profile)
        sim.load(self.running, self.waiting)
        sim.now, sim.steps, sim.events = self.at, self.steps, self.events
        return sim


def run_to_checkpoint(
    sim: FastReplica, valid_from: float, deadline: float | None = None, preempted_before: int = 0
) -> Checkpoint:
    """Run `sim` (everything queued; no step in flight left) until a request queued last would take part
    in the next step. Raises SimulationStuck or DeadlineExceeded as a forecast would. `preempted_before`:
    preemptions before `sim` was loaded (an extended checkpoint's)."""
    max_seqs = sim.max_seqs
    sim.step_while(lambda s: len(s.running) + len(s.waiting) >= max_seqs, deadline, "checkpoint")
    running, waiting = sim.plans()
    preemptions = preempted_before + sim.num_preemptions
    return Checkpoint(sim.now, valid_from, running, waiting, sim.steps, sim.events, preemptions)


def extended(
    checkpoint: Checkpoint,
    plan: Plan,
    arrival: float,
    config: ReplicaConfig,
    profile: Profile,
    deadline: float | None = None,
) -> Checkpoint | None:
    """The checkpoint of the same run with `plan` queued last at `arrival` (after every other pending
    request); None when it reaches the queue after `checkpoint.at` (it changes the run from there)."""
    if not checkpoint.covers(arrival):
        return None
    sim = FastReplica(config, profile)
    sim.load(checkpoint.running, [*checkpoint.waiting, plan])
    sim.now, sim.steps, sim.events = checkpoint.at, checkpoint.steps, checkpoint.events
    return run_to_checkpoint(sim, max(checkpoint.valid_from, arrival), deadline, checkpoint.preemptions)
