"""The watch cache: one storage watch per resource, fanned out to every HTTP watcher of it.

Like kube-apiserver's cacher, each resource prefix has one `WatchCache` that follows the store from
the revision it started at and keeps a bounded window of recent changes, decoded once. A watcher whose
resourceVersion falls inside the window is served from it, so a hundred watchers cost one storage
watch, one decode per change, and one encoding per change and media type. A watcher from before the
window (typically one resuming after an API server restart) gets its own storage watch, which is
exact, and raises `Compacted` if that history is gone; at most `max_store_watches` of those are open at
once, and a watcher past that is told its resourceVersion is too old (410), as kube-apiserver's cache
tells every watcher from before its window, so that it relists instead of costing a storage watch.

Watchers share the window: each keeps only a sequence number, and one asyncio.Event per append wakes
them all. A watcher that falls more than the window behind is ended (it resumes from its last
resourceVersion, as clients do whenever a watch ends).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import deque
from collections.abc import Callable

from podnet.apiserver.codec import MSGPACK, encode, from_storage
from podnet.apiserver.storage.base import Compacted, Progress, StorageError, Store, WatchEvent

from podnet.tasks import cancel_and_wait

log = logging.getLogger(__name__)

ADDED, MODIFIED, DELETED, BOOKMARK, ERROR = "ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"


class Change:
    """One storage change as watchers see it: the object after it (for DELETED, the last state, with
    the deletion's revision as its resourceVersion, as Kubernetes sends it) and the object before."""

    __slots__ = ("revision", "type", "key", "object", "previous", "_encoded")

    def __init__(self, revision: int, type: str, key: str, obj: dict, previous: dict | None):
        self.revision = revision
        self.type = type
        self.key = key
        self.object = obj
        self.previous = previous
        self._encoded: dict[tuple[str, str], bytes] = {}

    @classmethod
    def from_event(cls, event: WatchEvent, identity: dict, prefix: str) -> Change:
        """Raises ValueError for a stored value that is not a JSON object. `prefix` is the resource's
        storage prefix, `identity` its apiVersion and kind."""
        previous = from_storage(event.prev_value, event.revision) if event.prev_value is not None else None
        if event.type == "DELETE":
            if previous is None:
                # etcd leaves out the previous value when its revision is compacted: name what was deleted.
                namespace, _, name = event.key[len(prefix) :].rpartition("/")
                metadata = {"name": name, "resourceVersion": str(event.revision)}
                if namespace:
                    metadata["namespace"] = namespace
                previous = identity | {"metadata": metadata}
            return cls(event.revision, DELETED, event.key, previous, previous)
        if event.value is None:
            raise ValueError(f"a PUT of {event.key} without a value")
        obj = from_storage(event.value, event.revision)
        return cls(event.revision, ADDED if event.created else MODIFIED, event.key, obj, previous)

    def encoded(self, event_type: str, media_type: str) -> bytes:
        """The wire form of `{"type", "object"}`; computed once per type and media type, shared by
        every watcher."""
        cache_key = (event_type, media_type)
        data = self._encoded.get(cache_key)
        if data is None:
            data = encode_event(event_type, self.object, media_type)
            self._encoded[cache_key] = data
        return data


def encode_event(event_type: str, obj: dict, media_type: str) -> bytes:
    data = encode({"type": event_type, "object": obj}, media_type)
    return data if media_type == MSGPACK else data + b"\n"


def _decode(event: WatchEvent, identity: dict, prefix: str) -> Change | None:
    """The change, or None (logged) for a stored value that cannot be decoded: one bad value written
    behind the API server's back must not stall the watchers."""
    try:
        return Change.from_event(event, identity, prefix)
    except ValueError as e:
        log.error("skipping undecodable value of %s at revision %d: %s", event.key, event.revision, e)
        return None


class WatchEnded(Exception):
    """The stream ends and the watcher resumes from its last resourceVersion: it fell out of the
    window, its storage watch ended, or the server is shutting down."""


class Subscription:
    """What a watch handler reads: `next(timeout)` gives the next Change, or None when `timeout`
    passes first; raises Compacted (send 410), WatchEnded or StorageError (end the stream)."""

    async def next(self, timeout: float | None) -> Change | None:
        raise NotImplementedError

    def bookmark_revision(self) -> int | None:
        """A revision up to which this watcher has been sent every change, or None when unsure."""
        raise NotImplementedError

    async def close(self) -> None:
        return None


class WatchCache:
    def __init__(self, store: Store, prefix: str, capacity: int, identity: dict):
        self.store = store
        self.prefix = prefix
        self.identity = identity  # apiVersion and kind of what lives under the prefix
        self.capacity = capacity
        self.start_revision = 0  # every change after this revision is in the window
        self.revision = 0  # every change up to this revision is in the window
        self.generation = 0  # bumped when the window is lost to a compaction: watchers get 410
        self._changes: deque[Change] = deque()
        self._first_seq = 0  # the sequence number of _changes[0]
        self._wakeup = asyncio.Event()
        self._started = asyncio.Event()
        self.watchers = 0
        self.ended = False

    # --- the one storage watch ----------------------------------------------------------------------

    async def run(self) -> None:
        backoff = 0.05
        while True:
            try:
                if not self._started.is_set():
                    self.start_revision = self.revision = await self.store.current_revision()
                    self._started.set()
                async for item in self.store.watch(self.prefix, self.revision):
                    backoff = 0.05
                    if isinstance(item, Progress):
                        self.revision = max(self.revision, item.revision)
                    else:
                        change = _decode(item, self.identity, self.prefix)
                        if change is None:
                            self.revision = item.revision
                        else:
                            self._append(change)
                    self._wake()
            except Compacted as e:
                # Cut off for longer than the store keeps history: what we missed is gone, so every
                # watcher must relist.
                log.warning("watch cache for %s lost its history: %s", self.prefix, e)
                self._restart()
                continue
            except (TimeoutError, StorageError, OSError) as e:
                log.warning("watch on %s failed, retrying in %.2fs: %s", self.prefix, backoff, e)
            except Exception:  # a bug must not silence every watcher of the resource: log, go on
                log.exception("watch cache for %s failed, retrying in %.2fs", self.prefix, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    def _restart(self) -> None:
        self.generation += 1
        self._changes.clear()
        self._started.clear()
        self._wake()

    def _append(self, change: Change) -> None:
        self._changes.append(change)
        self.revision = change.revision
        if len(self._changes) > self.capacity:
            dropped = self._changes.popleft()
            self._first_seq += 1
            self.start_revision = dropped.revision

    def _wake(self) -> None:
        wakeup, self._wakeup = self._wakeup, asyncio.Event()
        wakeup.set()

    def forget_before(self, revision: int) -> None:
        """The store was compacted at `revision`: the window may no longer answer from before it, or
        a watcher would get history that a fresh list could not reproduce."""
        while self._changes and self._changes[0].revision < revision:
            self._changes.popleft()
            self._first_seq += 1
        self.start_revision = max(self.start_revision, min(revision, self.revision))

    # --- watchers ---------------------------------------------------------------------------------------

    async def wait_started(self) -> None:
        await self._started.wait()

    def covers(self, after_revision: int) -> bool:
        return self._started.is_set() and after_revision >= self.start_revision

    def subscribe(self, after_revision: int) -> _CacheSubscription:
        position = bisect.bisect_right(self._changes, after_revision, key=lambda c: c.revision)
        return _CacheSubscription(self, self._first_seq + position, self.generation, after_revision)


class _CacheSubscription(Subscription):
    def __init__(self, cache: WatchCache, seq: int, generation: int, after_revision: int):
        self.cache = cache
        self.seq = seq
        self.generation = generation
        self.after_revision = after_revision
        cache.watchers += 1
        self._closed = False

    async def next(self, timeout: float | None) -> Change | None:
        cache = self.cache
        # One deadline for the call: wakeups that bring nothing (progress) do not extend it.
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        while True:
            if cache.ended:
                raise WatchEnded()
            if cache.generation != self.generation:
                raise Compacted(self.after_revision, cache.start_revision)
            if self.seq < cache._first_seq:
                raise WatchEnded()
            index = self.seq - cache._first_seq
            if index < len(cache._changes):
                change = cache._changes[index]
                self.seq += 1
                self.after_revision = change.revision
                return change
            try:
                async with asyncio.timeout_at(deadline):
                    await cache._wakeup.wait()
            except TimeoutError:
                return None

    def bookmark_revision(self) -> int | None:
        cache = self.cache
        if cache.generation != self.generation or self.seq - cache._first_seq < len(cache._changes):
            return None
        return cache.revision

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.cache.watchers -= 1


class _StoreSubscription(Subscription):
    """A watcher's own storage watch, for resourceVersions older than the cache's window. Like the
    cache, it rides out a storage outage by watching again from the last revision it saw; only a
    compaction ends it."""

    def __init__(self, store: Store, prefix: str, after_revision: int, queue_size: int, identity: dict):
        self._queue: asyncio.Queue[Change | Progress | BaseException] = asyncio.Queue(queue_size)
        self._identity = identity
        self._prefix = prefix
        self._revision = after_revision  # delivered to the watcher
        self._pumped = after_revision  # read from storage
        self._task = asyncio.create_task(self._pump(store, prefix))
        self.on_close: Callable[[_StoreSubscription], None] = lambda subscription: None

    async def _pump(self, store: Store, prefix: str) -> None:
        backoff = 0.05
        while True:
            try:
                async for item in store.watch(prefix, self._pumped):
                    backoff = 0.05
                    self._pumped = max(self._pumped, item.revision)
                    change = item if isinstance(item, Progress) else _decode(item, self._identity, self._prefix)
                    if change is not None:
                        await self._queue.put(change)
            except Compacted as e:
                await self._queue.put(e)
                return
            except (TimeoutError, StorageError, OSError) as e:
                log.debug("watch on %s from %d failed, retrying in %.2fs: %s", prefix, self._pumped, backoff, e)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def next(self, timeout: float | None) -> Change | None:
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    item = await self._queue.get()
            except TimeoutError:
                return None
            if isinstance(item, BaseException):
                raise item
            self._revision = item.revision
            if isinstance(item, Change):
                return item

    def bookmark_revision(self) -> int | None:
        return self._revision if self._queue.empty() else None

    def end(self) -> None:
        # What is queued is dropped: the watcher resumes from the last change it was sent.
        self._task.cancel()
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(WatchEnded())

    async def close(self) -> None:
        self.on_close(self)
        await cancel_and_wait(self._task)


class WatchHub:
    """The watch caches of one server, created on first use, one per storage prefix."""

    def __init__(self, store: Store, capacity: int, max_store_watches: int = 64):
        self.store = store
        self.capacity = capacity
        self.max_store_watches = max_store_watches
        self._caches: dict[str, WatchCache] = {}
        self._tasks: set[asyncio.Task] = set()
        self._store_subscriptions: set[_StoreSubscription] = set()

    async def subscribe(self, prefix: str, after_revision: int, identity: dict) -> Subscription:
        """Changes under `prefix` with revisions after `after_revision`, served from the resource's
        cache when it can be. `identity` is the apiVersion and kind of the objects there."""
        cache = self._caches.get(prefix)
        if cache is None:
            cache = self._caches[prefix] = WatchCache(self.store, prefix, self.capacity, identity)
            task = asyncio.create_task(cache.run(), name=f"watch-cache {prefix}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await cache.wait_started()
        if cache.covers(after_revision):
            return cache.subscribe(after_revision)
        if len(self._store_subscriptions) >= self.max_store_watches:
            raise Compacted(after_revision, cache.start_revision)
        subscription = _StoreSubscription(self.store, prefix, after_revision, self.capacity, identity)
        self._store_subscriptions.add(subscription)
        subscription.on_close = self._store_subscriptions.discard
        return subscription

    def end_all(self) -> None:
        """Ends every watch stream now (server shutdown): watchers reconnect elsewhere or later."""
        for cache in self._caches.values():
            cache.ended = True
            cache._wake()
        for subscription in list(self._store_subscriptions):
            subscription.end()

    def forget_before(self, revision: int) -> None:
        for cache in self._caches.values():
            cache.forget_before(revision)

    def watchers(self) -> dict[str, int]:
        return {prefix: cache.watchers for prefix, cache in self._caches.items()}

    async def close(self) -> None:
        await cancel_and_wait(*self._tasks)
