"""The held-request queue: order (priority, then deadline), the bound (lowest rank shed), expiry, and
the order of a placement pass (a lower priority never overtakes a higher one)."""

from __future__ import annotations

from block.admission import Held, HeldQueue, Target


def held(priority: int, arrived: float, name: str, ttft_s: float = 3.0) -> Held:
    return Held(Target(arrived, ttft_s, None, priority), name)


def names(queue: HeldQueue) -> list[str]:
    return [h.item for h in queue]


def test_order_is_priority_then_deadline() -> None:
    q = HeldQueue(10)
    for h in (held(0, 1.0, "low-early"), held(1, 2.0, "high-late"), held(0, 0.5, "low-earliest")):
        assert q.offer(h) is None
    q.offer(held(1, 1.5, "high-early"))
    assert names(q) == ["high-early", "high-late", "low-earliest", "low-early"]


def test_full_queue_sheds_the_lowest_rank_first() -> None:
    q = HeldQueue(2)
    q.offer(held(0, 1.0, "low"))
    q.offer(held(1, 1.0, "high"))
    shed = q.offer(held(1, 2.0, "high-2"))  # outranks the low one: the low one goes
    assert shed is not None and shed.item == "low"
    newcomer = held(0, 0.0, "low-2")
    assert q.offer(newcomer) is newcomer  # ranks below everything held: it is the one shed
    assert names(q) == ["high", "high-2"] and len(q) == 2


def test_zero_bound_holds_nothing() -> None:
    q = HeldQueue(0)
    h = held(5, 0.0, "x")
    assert q.offer(h) is h and len(q) == 0


def test_expire_and_remove() -> None:
    q = HeldQueue(10)
    a, b = held(0, 0.0, "a", ttft_s=1.0), held(0, 0.0, "b", ttft_s=5.0)
    q.offer(a)
    q.offer(b)
    assert [h.item for h in q.expire(2.0)] == ["a"]
    assert q.remove(b) and not q.remove(b) and len(q) == 0


def test_a_pass_stops_before_lower_priorities_after_a_miss() -> None:
    q = HeldQueue(10)
    for h in (held(1, 0.0, "high"), held(0, 0.0, "low-1"), held(0, 1.0, "low-2")):
        q.offer(h)
    tried: list[str] = []

    def refuse_high(h: Held) -> bool:
        tried.append(h.item)
        if h.item == "high":
            return False
        q.remove(h)
        return True

    q.place_in_order(refuse_high)
    assert tried == ["high"] and len(q) == 3  # the low ones wait behind the high one
    tried.clear()

    def place_all(h: Held) -> bool:
        tried.append(h.item)
        return q.remove(h)

    q.place_in_order(place_all)
    assert tried == ["high", "low-1", "low-2"] and len(q) == 0
