"""Which instances a decision may use: the filter stage in front of the policy.

As in llm-d's filter -> scorer -> picker: filters drop the instances a request must not go to, the policy
then scores and picks among the rest. A filter takes the candidate views in order and returns those it
keeps, in the same order. The router filters by rotation (health, draining) and by the instances a retry
already tried; the provisioning simulator by the instances its fleet has active.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Protocol, TypeVar

from block.policies import InstanceView

V = TypeVar("V", bound=InstanceView)


class Filter(Protocol):
    def __call__(self, views: Sequence[V]) -> Sequence[V]: ...


class InRotation:
    """Only the instances in rotation: `ids()` names them (asked at every decision)."""

    def __init__(self, ids: Callable[[], Collection[str]]) -> None:
        self.ids = ids

    def __call__(self, views: Sequence[V]) -> Sequence[V]:
        ids = self.ids()
        return [v for v in views if v.id in ids]


class Untried:
    """Not the instances a request already tried (a retry goes elsewhere)."""

    def __init__(self, tried: Collection[str]) -> None:
        self.tried = tried

    def __call__(self, views: Sequence[V]) -> Sequence[V]:
        if not self.tried:
            return views
        return [v for v in views if v.id not in self.tried]


def apply_filters(filters: Sequence[Filter], views: Sequence[V]) -> Sequence[V]:
    for keep in filters:
        views = keep(views)
    return views
