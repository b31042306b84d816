"""Recording Kubernetes Events (`v1` Event) from every component, as client-go's legacy recorder does.

`EventRecorder` is the asyncio side of `podnet.api.events`: `record(...)` never blocks and never raises
(events are best effort, as in Kubernetes); a background task writes them in order, creating new events
and patching the count of repeated ones, and drops (counted) what a full queue cannot hold.

The reasons and messages components use are Kubernetes' own; the helpers at the end name the ones more
than one component writes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from podnet.api.events import NORMAL, WARNING, Create, EventCorrelator, Patch, object_reference
from podnet.client import ApiClient, ApiError
from podnet.tasks import cancel_and_wait

log = logging.getLogger(__name__)

__all__ = ["NORMAL", "WARNING", "EventRecorder", "object_reference", "pod_created", "pod_deleted"]

_QUEUE_LIMIT = 1000


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
        await cancel_and_wait(self._writer)


# Events more than one component records, worded as Kubernetes words them.


def pod_created(recorder: EventRecorder, owner: dict, pod_name: str) -> None:
    """A ReplicaSet created one of its pods."""
    recorder.record(owner, NORMAL, "SuccessfulCreate", f"Created pod: {pod_name}")


def pod_deleted(recorder: EventRecorder, owner: dict, pod_name: str) -> None:
    recorder.record(owner, NORMAL, "SuccessfulDelete", f"Deleted pod: {pod_name}")
