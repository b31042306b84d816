"""Kubernetes Events (`v1` Event) as client-go's legacy recorder writes them, for every component.

`EventCorrelator` is pure: an event that repeats one already written (same source, object, type, reason
and message) becomes a patch of that event's `count` and `lastTimestamp`, as client-go's EventLogger
aggregates them; anything else is a new Event named `<object name>.<unix nanoseconds in hex>`.
`EventRecorder` is the asyncio adapter: `record(...)` never blocks and never raises (events are best
effort, as in Kubernetes); a background task writes them in order, and drops (counted) what a full queue
cannot hold.

The reasons and messages components use are Kubernetes' own; the helpers at the end name the ones more
than one component writes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from podnet.client import ApiClient, ApiError

log = logging.getLogger(__name__)

NORMAL, WARNING = "Normal", "Warning"
_QUEUE_LIMIT = 1000
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


class EventRecorder:
    """`record(obj, type, reason, message)` from any coroutine or callback of a running loop."""

    def __init__(self, client: ApiClient, component: str, host: str | None = None):
        self.client = client
        self.correlator = EventCorrelator(component, host)
        self._queue: asyncio.Queue[tuple[dict, str, str, str, datetime]] = asyncio.Queue(_QUEUE_LIMIT)
        self._writer: asyncio.Task | None = None
        self.dropped = 0

    def record(self, obj: dict, event_type: str, reason: str, message: str, *, field_path: str | None = None) -> None:
        try:
            self._queue.put_nowait((object_reference(obj, field_path), event_type, reason, message,
                                    datetime.now(UTC)))
        except asyncio.QueueFull:
            self.dropped += 1
            return
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_all(), name="event recorder")

    async def _write_all(self) -> None:
        while not self._queue.empty():
            involved, event_type, reason, message, at = self._queue.get_nowait()
            write = self.correlator.observe(involved, event_type, reason, message, at)
            if not await self._write(write) and isinstance(write, Patch):
                # The event expired meanwhile: this repeat starts a new one.
                self.correlator.forget(write.namespace, write.name)
                await self._write(self.correlator.observe(involved, event_type, reason, message, at))

    async def _write(self, write: Create | Patch) -> bool:
        try:
            if isinstance(write, Create):
                await self.client.create(write.event)
            else:
                await self.client.patch("events", write.name, write.patch, namespace=write.namespace)
        except ApiError as exc:
            log.debug("event not recorded: %s", exc)
            return exc.code != 404
        return True

    async def flush(self, timeout: float = 5.0) -> None:
        """Waits until what was recorded so far is written (tests, and a component about to exit)."""
        deadline = time.monotonic() + timeout
        while (not self._queue.empty() or (self._writer is not None and not self._writer.done())) \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        await self.flush(1.0)
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer


# Events more than one component records, worded as Kubernetes words them.


def pod_created(recorder: EventRecorder, owner: dict, pod_name: str) -> None:
    """A ReplicaSet created one of its pods."""
    recorder.record(owner, NORMAL, "SuccessfulCreate", f"Created pod: {pod_name}")


def pod_deleted(recorder: EventRecorder, owner: dict, pod_name: str) -> None:
    recorder.record(owner, NORMAL, "SuccessfulDelete", f"Deleted pod: {pod_name}")
