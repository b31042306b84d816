"""Kubernetes Events (`v1` Event) as client-go's legacy recorder builds them, pure.

`EventCorrelator`: an event that repeats one already written (same source, object, type, reason and
message) becomes a patch of that event's `count` and `lastTimestamp`, as client-go's EventLogger
aggregates them; anything else is a new Event named `<object name>.<unix nanoseconds in hex>`. The time
comes in; the writing is podnet/events.py's.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from datetime import datetime

NORMAL, WARNING = "Normal", "Warning"
_REMEMBERED = 4096  # client-go's LRU of recent events per recorder


def object_reference(obj: dict, field_path: str | None = None) -> dict:
    """The `involvedObject` of an event about `obj` (an API object with kind and apiVersion)."""
    meta = obj.get("metadata") or {}
    reference = {"kind": obj.get("kind"), "namespace": meta.get("namespace"), "name": meta.get("name"),
                 "uid": meta.get("uid"), "apiVersion": obj.get("apiVersion"),
                 "resourceVersion": meta.get("resourceVersion")}
    if field_path:
        reference["fieldPath"] = field_path
    return {k: v for k, v in reference.items() if v}


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Create:
    event: dict


@dataclass(frozen=True, slots=True)
class Patch:
    namespace: str
    name: str
    patch: dict


class EventCorrelator:
    """Turns what happened into the Event write that reports it. Pure: the time comes in."""

    def __init__(self, component: str, host: str | None = None, remembered: int = _REMEMBERED):
        self.component = component
        self.host = host
        self._remembered = remembered
        # aggregation key → (namespace, event name, count, firstTimestamp)
        self._seen: collections.OrderedDict[tuple, tuple[str, str, int, str]] = collections.OrderedDict()

    def _key(self, involved: dict, event_type: str, reason: str, message: str) -> tuple:
        return (self.component, self.host, involved.get("kind"), involved.get("namespace"), involved.get("name"),
                involved.get("uid"), involved.get("apiVersion"), involved.get("fieldPath"), event_type, reason, message)

    def observe(self, involved: dict, event_type: str, reason: str, message: str, now: datetime) -> Create | Patch:
        key = self._key(involved, event_type, reason, message)
        stamp = _stamp(now)
        seen = self._seen.get(key)
        if seen is not None:
            namespace, name, count, first = seen
            self._seen[key] = (namespace, name, count + 1, first)
            self._seen.move_to_end(key)
            return Patch(namespace, name, {"count": count + 1, "lastTimestamp": stamp})
        namespace = involved.get("namespace") or "default"
        name = f"{involved.get('name')}.{int(now.timestamp() * 1e9):x}"
        source = {"component": self.component, **({"host": self.host} if self.host else {})}
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": involved,
            "reason": reason, "message": message, "type": event_type,
            "source": source,
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
            "reportingComponent": self.component, "reportingInstance": self.host or "",
        }
        self._seen[key] = (namespace, name, 1, stamp)
        while len(self._seen) > self._remembered:
            self._seen.popitem(last=False)
        return Create(event)

    def forget(self, namespace: str, name: str) -> None:
        """The event is gone (expired): the next repeat starts a new one."""
        for key, (ns, event_name, _, _) in list(self._seen.items()):
            if (ns, event_name) == (namespace, name):
                del self._seen[key]
