"""The storage contract: one suite, run against the SQLite store and against a real etcd."""

from __future__ import annotations

import asyncio
import itertools
import socket
import sys
from collections.abc import AsyncIterator, Callable

import pytest
from podnet.apiserver.storage import open_store
from podnet.apiserver.storage.base import (
    AlreadyExists,
    Compacted,
    Conflict,
    FutureRevision,
    Guard,
    KeyValue,
    NotFound,
    Progress,
    Store,
    Unavailable,
    WatchEvent,
)
from podnet.apiserver.storage.etcd import EtcdStore
from podnet.apiserver.storage.sqlite import SqliteStore

PROGRESS_INTERVAL = 0.3  # SQLite; etcd's is PROGRESS_NOTIFY_INTERVAL in tests/support/etcd.py
_test_numbers = itertools.count()

StoreFactory = Callable[[], Store]


@pytest.fixture(params=["sqlite", pytest.param("etcd", marks=pytest.mark.etcd)])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'store.db'}"
    return request.getfixturevalue("etcd_server_module").url


@pytest.fixture
async def make_store(store_url: str) -> AsyncIterator[StoreFactory]:
    """Opens stores on the backend under test (several may share it); closes them all afterwards."""
    opened: list[Store] = []

    # etcd's progress interval is the server's (see tests/support/etcd.py).
    # A small backlog makes the SQLite watchers of these tests fall behind and catch up from the log.
    options = (
        {"progress_interval": PROGRESS_INTERVAL, "watch_backlog": 8}
        if store_url.startswith("sqlite:")
        else {}
    )

    def make() -> Store:
        store = open_store(store_url, **options)
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def store(make_store: StoreFactory) -> Store:
    store = make_store()
    await store.open()
    return store


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own: the etcd server is shared by the module's tests."""
    return f"/registry/t{next(_test_numbers)}/"


async def next_event(watch: AsyncIterator[WatchEvent | Progress], timeout: float = 5.0) -> WatchEvent:
    """The next change of a watch, skipping progress notifications."""
    async with asyncio.timeout(timeout):
        async for item in watch:
            if isinstance(item, WatchEvent):
                return item
    raise AssertionError("the watch ended")


def summary(event: WatchEvent) -> tuple:
    return (event.type, event.key, event.revision, event.value, event.prev_value, event.created)


async def test_create_get_update_delete(store: Store, prefix: str) -> None:
    key = prefix + "default/a"
    created = await store.create(key, b"one")
    assert await store.get(key) == KeyValue(key, b"one", created, created)

    updated = await store.update(key, b"two", created)
    assert updated > created
    assert await store.get(key) == KeyValue(key, b"two", created, updated)

    unconditional = await store.update(key, b"three", 0)
    assert await store.get(key) == KeyValue(key, b"three", created, unconditional)

    deleted_at, deleted = await store.delete(key, unconditional)
    assert deleted_at > unconditional
    assert deleted == KeyValue(key, b"three", created, unconditional)
    assert await store.get(key) is None
    assert await store.current_revision() >= deleted_at

    recreated = await store.create(key, b"again")
    assert await store.get(key) == KeyValue(key, b"again", recreated, recreated)


async def test_write_preconditions(store: Store, prefix: str) -> None:
    key = prefix + "default/a"
    first = await store.create(key, b"v1")
    with pytest.raises(AlreadyExists):
        await store.create(key, b"other")
    second = await store.update(key, b"v2", first)

    with pytest.raises(Conflict) as stale_update:
        await store.update(key, b"stale", first)
    assert stale_update.value.key == key
    assert stale_update.value.current == KeyValue(key, b"v2", first, second)
    with pytest.raises(Conflict):
        await store.delete(key, first)
    assert await store.get(key) == KeyValue(key, b"v2", first, second)

    missing = prefix + "default/missing"
    with pytest.raises(NotFound):
        await store.update(missing, b"x", 0)
    with pytest.raises(NotFound):
        await store.delete(missing)
    await store.delete(key)
    with pytest.raises(NotFound):
        await store.update(key, b"x", second)
    with pytest.raises(NotFound):
        await store.delete(key)


async def test_a_create_beside_a_guard_lands_only_while_the_guard_is_unchanged(store: Store, prefix: str) -> None:
    namespace = prefix + "namespaces/team"
    opened = await store.create(namespace, b"active")
    first = await store.create(prefix + "team/a", b"a", beside=Guard(namespace, opened))
    assert (await store.get(prefix + "team/a")).mod_revision == first  # type: ignore[union-attr]
    with pytest.raises(AlreadyExists):  # the object's own check comes first
        await store.create(prefix + "team/a", b"again", beside=Guard(namespace, opened))
    marked = await store.update(namespace, b"terminating", opened)
    with pytest.raises(Conflict) as changed:
        await store.create(prefix + "team/b", b"b", beside=Guard(namespace, opened))
    assert changed.value.key == namespace and changed.value.current.mod_revision == marked  # type: ignore[union-attr]
    assert await store.get(prefix + "team/b") is None
    await store.delete(namespace)
    with pytest.raises(NotFound) as gone:
        await store.create(prefix + "team/c", b"c", beside=Guard(namespace, marked))
    assert str(gone.value) == namespace


async def test_revisions_strictly_increase(store: Store, prefix: str) -> None:
    before = await store.current_revision()
    revisions = [before]
    for i in range(5):
        revisions.append(await store.create(f"{prefix}default/k{i}", b"v"))
        revisions.append(await store.update(f"{prefix}default/k{i}", b"w", revisions[-1]))
    revisions.append((await store.delete(f"{prefix}default/k0"))[0])
    assert revisions == sorted(set(revisions))
    assert await store.current_revision() == revisions[-1]


async def test_list_in_key_order_under_the_prefix_only(store: Store, prefix: str) -> None:
    for name in ["b", "a", "c"]:
        await store.create(f"{prefix}ns/{name}", name.encode())
    await store.create(f"{prefix}ns2/x", b"sibling namespace")
    await store.create(prefix.rstrip("/") + "x/ns/a", b"sibling resource")

    items, revision = await store.list(prefix + "ns/")
    assert [(kv.key, kv.value) for kv in items] == [(f"{prefix}ns/{n}", n.encode()) for n in "abc"]
    assert revision == await store.current_revision()
    everything, _ = await store.list(prefix)
    assert len(everything) == 4


async def test_list_at_a_past_revision(store: Store, prefix: str) -> None:
    a = await store.create(prefix + "ns/a", b"a1")
    await store.create(prefix + "ns/b", b"b1")
    past = await store.current_revision()
    await store.update(prefix + "ns/a", b"a2", a)
    await store.delete(prefix + "ns/b")
    await store.create(prefix + "ns/c", b"c1")

    then, revision = await store.list(prefix, revision=past)
    assert revision == past
    assert [(kv.key, kv.value) for kv in then] == [(prefix + "ns/a", b"a1"), (prefix + "ns/b", b"b1")]
    now, _ = await store.list(prefix)
    assert [(kv.key, kv.value) for kv in now] == [(prefix + "ns/a", b"a2"), (prefix + "ns/c", b"c1")]


async def test_paged_list_is_one_consistent_snapshot(store: Store, prefix: str) -> None:
    names = [f"{prefix}ns/{i:02d}" for i in range(10)]
    for name in names:
        await store.create(name, b"v")

    first, snapshot = await store.list(prefix, limit=4)
    assert [kv.key for kv in first] == names[:4]
    # Writes between pages do not show: the next pages are read at the first page's revision.
    await store.delete(names[5])
    await store.create(prefix + "ns/05a", b"new")
    pages = [first]
    while True:
        page, revision = await store.list(prefix, revision=snapshot, limit=4, start_after=pages[-1][-1].key)
        assert revision == snapshot
        if not page:
            break
        pages.append(page)
    assert [kv.key for page in pages for kv in page] == names
    assert [len(page) for page in pages] == [4, 4, 2]


async def test_watch_replays_from_a_past_revision_then_follows(store: Store, prefix: str) -> None:
    a = await store.create(prefix + "ns/a", b"a1")
    start = await store.current_revision()
    expected = [
        ("PUT", prefix + "ns/a", await store.update(prefix + "ns/a", b"a2", a), b"a2", b"a1", False),
        ("PUT", prefix + "ns/b", await store.create(prefix + "ns/b", b"b1"), b"b1", None, True),
    ]
    deleted_at, _ = await store.delete(prefix + "ns/a")
    expected.append(("DELETE", prefix + "ns/a", deleted_at, None, b"a2", False))
    await store.create(prefix.rstrip("/") + "x/ns/a", b"outside the prefix")

    watch = store.watch(prefix, start)
    try:
        assert [summary(await next_event(watch)) for _ in expected] == expected
        live = [
            ("PUT", prefix + "ns/c", await store.create(prefix + "ns/c", b"c1"), b"c1", None, True),
            ("PUT", prefix + "ns/a", await store.create(prefix + "ns/a", b"a3"), b"a3", None, True),
        ]
        assert [summary(await next_event(watch)) for _ in live] == live
    finally:
        await watch.aclose()


async def test_watch_reports_progress_when_idle(store: Store, prefix: str) -> None:
    created = await store.create(prefix + "ns/a", b"v")
    await store.create(prefix.rstrip("/") + "x/ns/a", b"outside the prefix")
    current = await store.current_revision()
    watch = store.watch(prefix, created - 1)
    try:
        assert (await next_event(watch)).revision == created
        async with asyncio.timeout(5):
            async for item in watch:
                assert isinstance(item, Progress), item
                if item.revision >= current:
                    break
        updated = await store.update(prefix + "ns/a", b"w", created)
        assert (await next_event(watch)).revision == updated
    finally:
        await watch.aclose()


async def test_delete_events_carry_the_deleted_value(store: Store, prefix: str) -> None:
    start = await store.current_revision()
    await store.create(prefix + "ns/a", b"value at deletion")
    watch = store.watch(prefix, start)
    try:
        assert (await next_event(watch)).type == "PUT"
        deleted_at, _ = await store.delete(prefix + "ns/a")
        event = await next_event(watch)
        assert summary(event) == ("DELETE", prefix + "ns/a", deleted_at, None, b"value at deletion", False)
    finally:
        await watch.aclose()


async def test_compaction_forgets_older_revisions(store: Store, prefix: str) -> None:
    a = await store.create(prefix + "ns/a", b"a1")
    early = await store.create(prefix + "ns/b", b"b1")
    a2 = await store.update(prefix + "ns/a", b"a2", a)
    deleted_at, _ = await store.delete(prefix + "ns/b")
    compacted = await store.create(prefix + "ns/c", b"c1")
    await store.compact(compacted)

    with pytest.raises(Compacted) as listed:
        await store.list(prefix, revision=early)
    assert listed.value.compacted == compacted
    with pytest.raises(Compacted):
        await store.list(prefix, revision=deleted_at)
    watch = store.watch(prefix, deleted_at - 1)
    try:
        with pytest.raises(Compacted):
            await next_event(watch)
    finally:
        await watch.aclose()

    # The compacted revision itself stays readable, and a watch right before it replays it.
    at_compaction, _ = await store.list(prefix, revision=compacted)
    assert [(kv.key, kv.value, kv.mod_revision) for kv in at_compaction] == [
        (prefix + "ns/a", b"a2", a2),
        (prefix + "ns/c", b"c1", compacted),
    ]
    watch = store.watch(prefix, compacted - 1)
    try:
        assert summary(await next_event(watch)) == ("PUT", prefix + "ns/c", compacted, b"c1", None, True)
        deleted_again, _ = await store.delete(prefix + "ns/c")
        assert summary(await next_event(watch)) == (
            "DELETE",
            prefix + "ns/c",
            deleted_again,
            None,
            b"c1",
            False,
        )
    finally:
        await watch.aclose()


async def test_concurrent_writers_lose_nothing(store: Store, prefix: str) -> None:
    start = await store.current_revision()
    counter = prefix + "ns/counter"
    await store.create(counter, b"0")

    async def increment() -> None:
        # The optimistic-concurrency loop the API server runs for an update.
        for _ in range(50):
            current = await store.get(counter)
            assert current is not None
            try:
                await store.update(counter, str(int(current.value) + 1).encode(), current.mod_revision)
                return
            except Conflict:
                await asyncio.sleep(0)
        raise AssertionError("no progress")

    async def create(i: int) -> int:
        return await store.create(f"{prefix}ns/item-{i:03d}", str(i).encode())

    async with asyncio.timeout(20):
        results = await asyncio.gather(*(create(i) for i in range(100)), *(increment() for _ in range(20)))
    created_revisions = [r for r in results if r is not None]
    assert len(set(created_revisions)) == 100

    items, _ = await store.list(prefix + "ns/item-")
    assert [kv.value for kv in items] == [str(i).encode() for i in range(100)]
    final = await store.get(counter)
    assert final is not None and final.value == b"20"

    # The log agrees: a replay sees every write exactly once, in revision order.
    watch = store.watch(prefix, start)
    try:
        events = [await next_event(watch) for _ in range(1 + 100 + 20)]
    finally:
        await watch.aclose()
    revisions = [e.revision for e in events]
    assert revisions == sorted(set(revisions))
    assert {e.revision for e in events if e.key != counter} == set(created_revisions)


async def test_a_watcher_that_falls_behind_loses_nothing(store: Store, prefix: str) -> None:
    start = await store.current_revision()
    watch = store.watch(prefix, start)
    try:
        first = await store.create(prefix + "ns/a", b"0")
        assert (await next_event(watch)).revision == first
        # The watcher reads nothing while many changes happen.
        written = [first]
        for i in range(1, 60):
            written.append(await store.update(prefix + "ns/a", str(i).encode(), written[-1]))
        events = [await next_event(watch) for _ in written[1:]]
        assert [(e.revision, e.value) for e in events] == [
            (r, str(i).encode()) for i, r in enumerate(written) if i
        ]
    finally:
        await watch.aclose()


async def test_list_at_a_future_revision_is_refused(store: Store, prefix: str) -> None:
    current = await store.current_revision()
    with pytest.raises(FutureRevision) as refused:
        await store.list(prefix, revision=current + 1000)
    assert (refused.value.requested, refused.value.current) == (current + 1000, current)


async def test_writes_survive_reopening(make_store: StoreFactory, prefix: str) -> None:
    first = make_store()
    await first.open()
    revision = await first.create(prefix + "ns/a", b"durable")
    await first.close()

    second = make_store()
    await second.open()
    assert await second.get(prefix + "ns/a") == KeyValue(prefix + "ns/a", b"durable", revision, revision)
    assert await second.create(prefix + "ns/b", b"next") > revision


@pytest.mark.etcd
async def test_etcd_outage_is_unavailable_then_recovers_losing_nothing(etcd_server) -> None:
    store = open_store(etcd_server.url)
    await store.open()
    prefix = "/registry/load/"
    acknowledged: list[tuple[str, int]] = []
    outage_errors = 0
    stop = asyncio.Event()

    async def write_load() -> None:
        nonlocal outage_errors
        for i in itertools.count():
            if stop.is_set():
                return
            try:
                acknowledged.append((f"{prefix}{i:05d}", await store.create(f"{prefix}{i:05d}", b"v")))
            except Unavailable:
                outage_errors += 1
                await asyncio.sleep(0.05)

    async def acknowledged_count_reaches(count: int) -> None:
        while len(acknowledged) < count:
            await asyncio.sleep(0.01)

    try:
        start = await store.current_revision()
        watch = store.watch(prefix, start)
        seen: list[WatchEvent] = []
        writer = asyncio.create_task(write_load())
        async with asyncio.timeout(10):
            await acknowledged_count_reaches(20)
            seen.append(await next_event(watch))

            etcd_server.kill()
            with pytest.raises(Unavailable):
                while True:  # the events written before the kill, then the break
                    seen.append(await next_event(watch))
            await watch.aclose()
            with pytest.raises(Unavailable):
                await store.get(prefix + "00000")
            # A reply already on its way when etcd died may still arrive; after that, nothing.
            before_restart = len(acknowledged)
            await asyncio.sleep(0.3)
            assert len(acknowledged) == before_restart, "a write was acknowledged while etcd was down"

            etcd_server.start()
            # The same store object finds etcd again by itself.
            await acknowledged_count_reaches(before_restart + 20)
        stop.set()
        await writer
        assert outage_errors > 0

        # Resume the broken watch from the last revision it delivered: nothing is missing or repeated.
        watch = store.watch(prefix, seen[-1].revision)
        try:
            while not seen or seen[-1].revision < acknowledged[-1][1]:
                seen.append(await next_event(watch))
        finally:
            await watch.aclose()
        revisions = [e.revision for e in seen]
        assert revisions == sorted(set(revisions))
        assert {(e.key, e.revision) for e in seen} >= set(acknowledged)

        # Acknowledged writes survived the crash, with revisions that only ever went up.
        assert [r for _, r in acknowledged] == sorted(set(r for _, r in acknowledged))
        items, _ = await store.list(prefix)
        assert {kv.key: kv.mod_revision for kv in items}.items() >= dict(acknowledged).items()
    finally:
        stop.set()
        if "writer" in locals():
            writer.cancel()
        await store.close()


_SQLITE_WRITER = """
import asyncio, sys
from podnet.apiserver.storage.sqlite import SqliteStore

async def main():
    async with SqliteStore(sys.argv[1]) as store:
        for i in range(100_000):
            revision = await store.create(f"/registry/crash/{i:06d}", b"v")
            print(f"/registry/crash/{i:06d} {revision}", flush=True)

asyncio.run(main())
"""


async def test_sqlite_keeps_every_acknowledged_write_through_sigkill(tmp_path) -> None:
    path = tmp_path / "crash.db"
    writer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SQLITE_WRITER, str(path), stdout=asyncio.subprocess.PIPE
    )
    acknowledged: dict[str, int] = {}
    try:
        assert writer.stdout is not None
        async with asyncio.timeout(10):
            while len(acknowledged) < 200:
                key, revision = (await writer.stdout.readline()).decode().split()
                acknowledged[key] = int(revision)
    finally:
        writer.kill()
        await writer.wait()

    async with SqliteStore(path) as store:
        items, revision = await store.list("/registry/crash/")
        assert {kv.key: kv.mod_revision for kv in items}.items() >= acknowledged.items()
        assert await store.create("/registry/crash/after", b"v") > max(acknowledged.values())


@pytest.mark.parametrize(
    "url",
    ["sqlite://relative.db", "sqlite:///", "etcd://", "etcd://127.0.0.1:2379/path", "postgres://127.0.0.1/x"],
)
def test_open_store_refuses_malformed_urls(url: str) -> None:
    with pytest.raises(ValueError):
        open_store(url)


def test_open_store_picks_the_backend_by_scheme() -> None:
    assert isinstance(open_store("sqlite:///var/lib/podnet/state.db"), SqliteStore)
    etcd = open_store("etcd://10.0.0.1:2379,10.0.0.2:2379")
    assert isinstance(etcd, EtcdStore) and etcd.endpoints == ["10.0.0.1:2379", "10.0.0.2:2379"]


@pytest.mark.etcd
async def test_etcd_store_moves_past_an_unreachable_endpoint(etcd_server_module) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{unused.getsockname()[1]}"
    async with EtcdStore([dead, etcd_server_module.endpoint], request_timeout=2) as store:
        # Nothing reached the dead endpoint, so the same call is made on the next one.
        assert await store.current_revision() > 0
        assert await store.create("/registry/contract/failover", b"x") > 0
    async with EtcdStore([dead], request_timeout=2) as store:
        with pytest.raises(Unavailable):
            await store.current_revision()
