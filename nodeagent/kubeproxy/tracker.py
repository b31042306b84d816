"""kube-proxy's change tracker, pure: informer events in, the net change per object since the last sync out.

As `pkg/proxy/servicechangetracker.go` does, each object's change is kept as {previous, current}, where
previous is what the last sync saw and current what the latest event says, both reduced by a projection
to the part rules depend on. Several events for one object between two syncs fold into one change; a
change whose current equals its previous (an update of labels nobody reads, an add then a delete) is
dropped, so it neither wakes the sync loop nor costs a recomputation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class Change(Generic[T]):
    previous: T | None
    current: T | None


class ChangeTracker(Generic[T]):
    def __init__(self, project: Callable[[Mapping], T | None], key: Callable[[Mapping], str]):
        self.project = project
        self.key = key
        self._changes: dict[str, Change[T]] = {}

    def update(self, old: Mapping | None, new: Mapping | None) -> bool:
        """Records one informer event (ADDED: old None; DELETED: new None); True when a change is pending
        for that object afterwards."""
        obj = new if new is not None else old
        if obj is None:
            return False
        key = self.key(obj)
        current = self.project(new) if new is not None else None
        change = self._changes.get(key)
        if change is None:
            change = Change(self.project(old) if old is not None else None, current)
        else:
            change.current = current
        if change.previous == change.current:
            self._changes.pop(key, None)
            return False
        self._changes[key] = change
        return True

    def __len__(self) -> int:
        return len(self._changes)

    def take(self) -> dict[str, Change[T]]:
        """The pending changes, which the caller now owns; the tracker starts empty again."""
        changes, self._changes = self._changes, {}
        return changes


def apply_changes(state: dict[str, Any], changes: Mapping[str, Change]) -> None:
    """Brings `state` (key -> projection) up to date with `changes`."""
    for key, change in changes.items():
        if change.current is None:
            state.pop(key, None)
        else:
            state[key] = change.current
