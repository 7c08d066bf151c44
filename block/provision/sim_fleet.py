"""Which simulated instances are held, and in what state, over virtual time.

The simulated cluster is built with `max_instances` replicas; the fleet says which of them the router may
use. States: off (not held), starting (held, booting until `ready_at`), active (in rotation), draining
(held, out of rotation until its requests finish). Held time is what a cloud bill counts: from the
scale-up decision (booting is paid for) to the release.
"""

from __future__ import annotations

from dataclasses import dataclass, field

OFF, STARTING, ACTIVE, DRAINING = "off", "starting", "active", "draining"


@dataclass
class SimInstance:
    index: int
    id: str
    state: str = OFF
    ready_at: float = 0.0
    held_since: float | None = None
    held_s: float = 0.0  # closed holding intervals so far


@dataclass
class SimFleet:
    instances: list[SimInstance]
    startup_delay_s: float
    timeline: list[tuple[float, int, int, int]] = field(default_factory=list)  # t, active, starting, draining

    @classmethod
    def build(cls, ids: list[str], initial: int, startup_delay_s: float) -> SimFleet:
        fleet = cls([SimInstance(i, id_) for i, id_ in enumerate(ids)], startup_delay_s)
        for inst in fleet.instances[:initial]:
            inst.state, inst.held_since = ACTIVE, 0.0
        fleet.record(0.0)
        return fleet

    def by_id(self, id_: str) -> SimInstance:
        return self.instances[self._index[id_]]

    def __post_init__(self) -> None:
        self._index = {inst.id: inst.index for inst in self.instances}
        self.active_ids: frozenset[str] = frozenset()
        self._refresh()

    def _refresh(self) -> None:
        self.active_ids = frozenset(i.id for i in self.instances if i.state == ACTIVE)

    def count(self, state: str) -> int:
        return sum(1 for i in self.instances if i.state == state)

    def record(self, t: float) -> None:
        self._refresh()
        self.timeline.append((t, self.count(ACTIVE), self.count(STARTING), self.count(DRAINING)))

    # -- transitions ---------------------------------------------------------------------------------

    def activate_ready(self, now: float) -> None:
        """Starting instances whose boot finished by `now` join the rotation (at their ready time)."""
        for inst in self.instances:
            if inst.state == STARTING and inst.ready_at <= now:
                inst.state = ACTIVE
                self.record(inst.ready_at)

    def start_one(self, now: float) -> SimInstance | None:
        """Scale up: a draining instance goes back in rotation at once, else an off one starts booting."""
        draining = [i for i in self.instances if i.state == DRAINING]
        if draining:
            inst = draining[-1]
            inst.state = ACTIVE
        else:
            off = [i for i in self.instances if i.state == OFF]
            if not off:
                return None
            inst = off[0]
            inst.state, inst.ready_at, inst.held_since = STARTING, now + self.startup_delay_s, now
            if self.startup_delay_s <= 0:
                inst.state = ACTIVE
        self.record(now)
        return inst

    def drain(self, inst: SimInstance, now: float) -> None:
        inst.state = DRAINING
        self.record(now)

    def release(self, inst: SimInstance, now: float) -> None:
        assert inst.held_since is not None
        inst.held_s += now - inst.held_since
        inst.state, inst.held_since = OFF, None
        self.record(now)

    def instance_seconds(self, end: float) -> float:
        """Held time of every instance, counting those still held until `end` (the last completion)."""
        return sum(
            i.held_s + (max(0.0, end - i.held_since) if i.held_since is not None else 0.0)
            for i in self.instances
        )
