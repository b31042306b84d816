"""Following a storage prefix in a process's memory: a list, then the watch hub's changes after it, and a
relist with backoff whenever the watch ends or storage fails, so the follower keeps its last state
meanwhile and misses nothing once storage is back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from podnet.apiserver.codec import from_storage
from podnet.apiserver.storage.base import StorageError, Store
from podnet.apiserver.watch import Change, WatchEnded, WatchHub

log = logging.getLogger(__name__)


async def follow(store: Store, hub: WatchHub, prefix: str, identity: dict, what: str,
                 listed: Callable[[dict[str, dict]], Awaitable[None]], changed: Callable[[Change], Awaitable[None]]) -> None:
    """Calls `listed` with every object under `prefix` by key, then `changed` for each change; for ever."""
    backoff = 0.05
    while True:
        try:
            kvs, revision = await store.list(prefix)
            await listed({kv.key: from_storage(kv.value, kv.mod_revision) for kv in kvs})
            subscription = await hub.subscribe(prefix, revision, identity)
            try:
                while True:
                    change = await subscription.next(None)
                    if change is not None:
                        await changed(change)
                        backoff = 0.05
            finally:
                await subscription.close()
        except (StorageError, WatchEnded, OSError, TimeoutError, ValueError) as e:
            log.warning("%s lost its watch, relisting in %.2fs: %s", what, backoff, e)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)
