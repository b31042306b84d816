"""Events expire, as kube-apiserver's `--event-ttl` (1 hour by default) makes etcd expire them: an Event
not written for longer than the TTL is deleted. `expired` decides, pure; `expire_events` is the loop
that lists and deletes, on the API server's own storage."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from podnet.apiserver.storage.base import Conflict, KeyValue, NotFound, Store

log = logging.getLogger(__name__)

EVENTS_PREFIX = "/registry/events/"


def _parse(stamp: object) -> datetime | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    for layout in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        with contextlib.suppress(ValueError):
            return datetime.strptime(stamp, layout).replace(tzinfo=UTC)
    return None


def last_written(event: dict) -> datetime | None:
    """When the event was last recorded: its latest timestamp of any kind."""
    meta = event.get("metadata") or {}
    stamps = [_parse(event.get(k)) for k in ("lastTimestamp", "eventTime", "firstTimestamp")]
    stamps.append(_parse(meta.get("creationTimestamp")))
    known = [s for s in stamps if s is not None]
    return max(known) if known else None


def expired(events: Iterable[KeyValue], now: datetime, ttl: float) -> list[KeyValue]:
    cutoff = now - timedelta(seconds=ttl)
    stale = []
    for kv in events:
        try:
            written = last_written(json.loads(kv.value))
        except ValueError:
            continue
        if written is not None and written < cutoff:
            stale.append(kv)
    return stale


async def expire_events(store: Store, ttl: float, *, interval: float | None = None) -> None:
    """Deletes expired Events every `interval` (a tenth of the TTL, between 1 s and 1 min) until cancelled."""
    every = interval if interval is not None else min(60.0, max(1.0, ttl / 10))
    while True:
        await asyncio.sleep(every)
        try:
            kvs, _ = await store.list(EVENTS_PREFIX)
            for kv in expired(kvs, datetime.now(UTC), ttl):
                with contextlib.suppress(NotFound, Conflict):  # rewritten or deleted meanwhile
                    await store.delete(kv.key, kv.mod_revision)
        except Exception as e:  # the store may be down; the next tick tries again
            log.warning("expiring events failed: %s", e)
