"""The watch cache over a real SQLite store: fan-out, resumption, compaction, bad values, shutdown."""

from __future__ import annotations

import asyncio
import json

import pytest
from podnet.apiserver.storage.base import Compacted, WatchEvent
from podnet.apiserver.storage.sqlite import SqliteStore
from podnet.apiserver.watch import ADDED, DELETED, MODIFIED, Change, WatchEnded, WatchHub

PREFIX = "/registry/pods/"
IDENTITY = {"apiVersion": "v1", "kind": "Pod"}


def pod(name: str) -> bytes:
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ns"}}).encode()


@pytest.fixture
async def store(tmp_path):
    store = SqliteStore(str(tmp_path / "store.db"))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def hub(store):
    hub = WatchHub(store, capacity=50)
    try:
        yield hub
    finally:
        hub.end_all()
        await hub.close()


async def drain(subscription, count: int) -> list[tuple[str, str, int]]:
    changes = []
    while len(changes) < count:
        change = await subscription.next(5)
        assert change is not None, f"only {len(changes)} of {count} changes arrived"
        changes.append((change.type, change.object["metadata"]["name"], change.revision))
    return changes


async def test_a_hundred_watchers_share_one_cache_and_see_every_change_in_order(store, hub):
    start = await store.current_revision()
    watchers = [await hub.subscribe(PREFIX, start, IDENTITY) for _ in range(100)]
    first = await store.create(PREFIX + "ns/a", pod("a"))
    second = await store.update(PREFIX + "ns/a", pod("a"), first)
    third, _ = await store.delete(PREFIX + "ns/a")
    expected = [(ADDED, "a", first), (MODIFIED, "a", second), (DELETED, "a", third)]
    results = await asyncio.gather(*(drain(w, 3) for w in watchers))
    assert all(result == expected for result in results)
    assert hub.watchers() == {PREFIX: 100}
    late = await hub.subscribe(PREFIX, first, IDENTITY)  # inside the window: served from the cache
    assert await drain(late, 2) == expected[1:]
    assert hub.watchers() == {PREFIX: 101}
    for w in [*watchers, late]:
        await w.close()
    assert hub.watchers() == {PREFIX: 0}


async def test_a_watcher_from_before_the_window_gets_its_own_exact_history(store, hub):
    before = await store.current_revision()
    created = await store.create(PREFIX + "ns/old", pod("old"))
    await hub.subscribe(PREFIX, await store.current_revision(), IDENTITY)  # the cache starts after `old`
    resumed = await hub.subscribe(PREFIX, before, IDENTITY)
    assert hub.watchers() == {PREFIX: 1}  # not counted: it reads storage itself
    assert await drain(resumed, 1) == [(ADDED, "old", created)]
    await resumed.close()


async def test_after_a_compaction_older_revisions_are_gone_from_cache_and_storage(store, hub):
    start = await store.current_revision()
    await hub.subscribe(PREFIX, start, IDENTITY)
    revisions = [await store.create(PREFIX + f"ns/p{i}", pod(f"p{i}")) for i in range(5)]
    await store.compact(revisions[3])
    hub.forget_before(revisions[3])
    expired = await hub.subscribe(PREFIX, revisions[0], IDENTITY)
    with pytest.raises(Compacted):
        await expired.next(5)
    await expired.close()
    recent = await hub.subscribe(PREFIX, revisions[3], IDENTITY)
    assert await drain(recent, 1) == [(ADDED, "p4", revisions[4])]


async def test_an_undecodable_value_is_skipped_and_the_cache_keeps_serving(store, hub):
    watcher = await hub.subscribe(PREFIX, await store.current_revision(), IDENTITY)
    await store.create(PREFIX + "ns/garbage", b"\xff not json")
    good = await store.create(PREFIX + "ns/good", pod("good"))
    assert await drain(watcher, 1) == [(ADDED, "good", good)]


def test_a_deleted_object_is_named_even_without_its_last_value():
    # A DELETE whose previous value is unknown (etcd omits it once compacted) still names the object.
    change = Change.from_event(WatchEvent("DELETE", PREFIX + "ns/gone", 9, None, None, False), IDENTITY, PREFIX)
    assert change.object == {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "gone", "namespace": "ns", "resourceVersion": "9"}}


async def test_ending_all_watches_wakes_every_watcher(store, hub):
    start = await store.current_revision()
    await store.create(PREFIX + "ns/x", pod("x"))
    cached = await hub.subscribe(PREFIX, await store.current_revision(), IDENTITY)
    own = await hub.subscribe(PREFIX, start, IDENTITY)  # before the window: its own storage watch
    waiting = [asyncio.create_task(cached.next(30)), asyncio.create_task(own.next(30))]
    await asyncio.sleep(0.05)
    hub.end_all()
    results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 5)
    assert isinstance(results[0], WatchEnded)
    # The storage watcher may have had its one change queued already; then the end comes next.
    if not isinstance(results[1], WatchEnded):
        with pytest.raises(WatchEnded):
            await own.next(5)
