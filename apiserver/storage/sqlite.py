"""The embedded store: a revision log in one SQLite file, as k3s's kine keeps it.

Every write appends one row to `kine`; the row id is the revision. A row records the key (`name`),
whether the write created or deleted it, the key's create revision, the revision it replaced
(`prev_revision`), the new value and the value it replaced. The state at revision R is, per key, the
newest row with id <= R unless that row is a deletion. Compaction removes rows no read at or after the
compacted revision can see and records that revision in `compaction`.

All SQLite calls run in one worker thread, so the event loop never blocks and the writes are naturally
serialized. This process is the only writer: after each commit the worker hands the event to the loop
(`call_soon_threadsafe`, in commit order) and the loop fans it out to the watchers; nothing polls.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from podnet.apiserver.storage.base import (
    AlreadyExists,
    Compacted,
    Conflict,
    FutureRevision,
    Guard,
    KeyValue,
    NotFound,
    OpensAsContext,
    Progress,
    StorageError,
    Unavailable,
    WatchEvent,
)
from podnet.apiserver.storage.keyrange import prefix_end

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    value BLOB,
    prev_value BLOB
);
CREATE INDEX IF NOT EXISTS kine_name_id ON kine (name, id);
CREATE UNIQUE INDEX IF NOT EXISTS kine_name_prev_revision ON kine (name, prev_revision);
CREATE TABLE IF NOT EXISTS compaction (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 0),
    revision INTEGER NOT NULL
);
"""

# A created row stores create_revision 0: its own id is its create revision.
_COLUMNS = "id, name, created, deleted, create_revision, prev_revision, value, prev_value"

# Rows read per worker call while a watch replays the log.
_REPLAY_BATCH = 512


class _Row:
    """One row of the revision log."""

    __slots__ = (
        "revision",
        "key",
        "created",
        "deleted",
        "create_revision",
        "prev_revision",
        "value",
        "prev_value",
    )

    def __init__(self, row: tuple) -> None:
        (
            self.revision,
            self.key,
            created,
            deleted,
            create_revision,
            self.prev_revision,
            self.value,
            self.prev_value,
        ) = row
        self.created = bool(created)
        self.deleted = bool(deleted)
        self.create_revision = self.revision if created else create_revision

    def key_value(self) -> KeyValue:
        return KeyValue(self.key, self.value, self.create_revision, self.revision)

    def event(self) -> WatchEvent:
        if self.deleted:
            return WatchEvent("DELETE", self.key, self.revision, None, self.prev_value, False)
        return WatchEvent("PUT", self.key, self.revision, self.value, self.prev_value, self.created)


def _range_sql(prefix: str) -> tuple[str, list[object]]:
    """A WHERE fragment selecting the names under `prefix`, and its parameters."""
    end = prefix_end(prefix)
    if end is None:
        return "name >= ?", [prefix]
    return "name >= ? AND name < ?", [prefix, end]


class _Watcher:
    """The loop-side queue of one watch: events published after it registered, under its prefix."""

    __slots__ = ("low", "high", "backlog", "events", "overflowed", "wakeup")

    def __init__(self, prefix: str, backlog: int) -> None:
        self.low = prefix
        self.backlog = backlog
        self.high = prefix_end(prefix)
        self.events: deque[WatchEvent] = deque()
        self.overflowed = False
        self.wakeup = asyncio.Event()

    def offer(self, event: WatchEvent) -> None:
        if event.key < self.low or (self.high is not None and event.key >= self.high):
            return
        if self.overflowed:
            return
        if len(self.events) >= self.backlog:
            # Too slow to keep up: forget the queue, the watch catches up from the log instead.
            self.overflowed = True
            self.events.clear()
        else:
            self.events.append(event)
        self.wakeup.set()


class SqliteStore(OpensAsContext):
    """The Store protocol over one SQLite file (see the module docstring).

    `progress_interval`: a watch with nothing to deliver for this many seconds yields a Progress.
    `watch_backlog`: events a watch may hold unread; past that it drops them and re-reads the log
    from where its reader is, so memory stays bounded and nothing is lost.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, progress_interval: float = 5.0, watch_backlog: int = 4096
    ) -> None:
        self.path = os.fspath(path)
        self.progress_interval = progress_interval
        self.watch_backlog = watch_backlog
        self._db: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watchers: set[_Watcher] = set()
        self._published_revision = 0
        self._closed = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._closed = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        self._published_revision = await self._call(self._open_db)

    async def close(self) -> None:
        if self._executor is None:
            return
        self._closed.set()
        for watcher in self._watchers:
            watcher.wakeup.set()
        await self._call(self._close_db)
        self._executor.shutdown(wait=False)
        self._executor = None

    def _open_db(self) -> int:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(_SCHEMA)
        self._db = db
        return self._current_revision()

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        if self._executor is None or self._loop is None:
            raise Unavailable("the SQLite store is not open")
        try:
            return await self._loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.OperationalError as e:
            raise Unavailable(f"SQLite: {e}") from e

    # -- worker-thread helpers -----------------------------------------------------------------

    def _read(self, fn: Callable[..., T], *args: object) -> T:
        """Runs `fn` in one read transaction, so it sees a single snapshot even with other readers."""
        assert self._db is not None
        self._db.execute("BEGIN")
        try:
            return fn(*args)
        finally:
            self._db.execute("COMMIT")

    def _write(self, fn: Callable[..., _Row | None]) -> _Row | None:
        """Runs `fn` in a write transaction; once committed, hands the appended row to the loop."""
        assert self._db is not None and self._loop is not None
        self._db.execute("BEGIN IMMEDIATE")
        try:
            row = fn()
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        if row is not None:
            self._loop.call_soon_threadsafe(self._publish, row.event())
        return row

    def _current_revision(self) -> int:
        assert self._db is not None
        found = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'kine'").fetchone()
        return found[0] if found else 0

    def _compacted_revision(self) -> int:
        assert self._db is not None
        found = self._db.execute("SELECT revision FROM compaction").fetchone()
        return found[0] if found else 0

    def _latest(self, key: str) -> _Row | None:
        """The newest row of `key`, deletion or not."""
        assert self._db is not None
        found = self._db.execute(
            f"SELECT {_COLUMNS} FROM kine WHERE name = ? ORDER BY id DESC LIMIT 1", (key,)
        ).fetchone()
        return _Row(found) if found else None

    def _append(
        self,
        key: str,
        *,
        created: bool,
        deleted: bool,
        create_revision: int,
        prev: _Row | None,
        value: bytes | None,
    ) -> _Row:
        assert self._db is not None
        prev_revision = prev.revision if prev else 0
        prev_value = prev.value if prev and not prev.deleted else None
        cursor = self._db.execute(
            "INSERT INTO kine (name, created, deleted, create_revision, prev_revision, value, prev_value)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                int(created),
                int(deleted),
                0 if created else create_revision,
                prev_revision,
                value,
                prev_value,
            ),
        )
        revision = cursor.lastrowid
        assert revision is not None
        return _Row(
            (revision, key, int(created), int(deleted), create_revision, prev_revision, value, prev_value)
        )

    def _next_version(self, current: _Row, value: bytes | None) -> _Row:
        """Appends the version of `current`'s key that follows it: `value`, or the deletion when None."""
        return self._append(
            current.key,
            created=False,
            deleted=value is None,
            create_revision=current.create_revision,
            prev=current,
            value=value,
        )

    def _existing(self, key: str, expected_mod_revision: int) -> _Row:
        """The live row of `key`, checked against the expected mod revision."""
        latest = self._latest(key)
        if latest is None or latest.deleted:
            raise NotFound(key)
        if expected_mod_revision and latest.revision != expected_mod_revision:
            raise Conflict(key, latest.key_value())
        return latest

    # -- reads ---------------------------------------------------------------------------------

    async def current_revision(self) -> int:
        return await self._call(self._read, self._current_revision)

    async def get(self, key: str) -> KeyValue | None:
        latest = await self._call(self._read, self._latest, key)
        return None if latest is None or latest.deleted else latest.key_value()

    async def list(
        self, prefix: str, *, revision: int = 0, limit: int = 0, start_after: str | None = None
    ) -> tuple[list[KeyValue], int]:
        return await self._call(self._read, self._list, prefix, revision, limit, start_after)

    def _list(
        self, prefix: str, revision: int, limit: int, start_after: str | None
    ) -> tuple[list[KeyValue], int]:
        assert self._db is not None
        current = self._current_revision()
        if revision:
            compacted = self._compacted_revision()
            if revision < compacted:
                raise Compacted(revision, compacted)
            if revision > current:
                raise FutureRevision(revision, current)
        else:
            revision = current
        where, params = _range_sql(prefix)
        if start_after is not None:
            where += " AND name > ?"
            params.append(start_after)
        sql = (
            f"SELECT {', '.join('k.' + c for c in _COLUMNS.split(', '))} FROM kine AS k"
            f" JOIN (SELECT MAX(id) AS id FROM kine WHERE {where} AND id <= ? GROUP BY name) AS newest"
            " ON k.id = newest.id WHERE k.deleted = 0 ORDER BY k.name"
        )
        params.append(revision)
        if limit:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self._db.execute(sql, params).fetchall()
        return [_Row(row).key_value() for row in rows], revision

    # -- writes --------------------------------------------------------------------------------

    async def create(self, key: str, value: bytes, *, beside: Guard | None = None) -> int:
        def create() -> _Row:
            latest = self._latest(key)
            if latest is not None and not latest.deleted:
                raise AlreadyExists(key)
            if beside is not None:
                self._existing(beside.key, beside.mod_revision)
            return self._append(key, created=True, deleted=False, create_revision=0, prev=latest, value=value)

        row = await self._call(self._write, create)
        assert row is not None
        return row.revision

    async def update(self, key: str, value: bytes, expected_mod_revision: int) -> int:
        def update() -> _Row:
            return self._next_version(self._existing(key, expected_mod_revision), value)

        row = await self._call(self._write, update)
        assert row is not None
        return row.revision

    async def delete(self, key: str, expected_mod_revision: int = 0) -> tuple[int, KeyValue]:
        deleted: list[KeyValue] = []

        def delete() -> _Row:
            current = self._existing(key, expected_mod_revision)
            deleted.append(current.key_value())
            return self._next_version(current, None)

        row = await self._call(self._write, delete)
        assert row is not None
        return row.revision, deleted[0]

    async def compact(self, revision: int) -> None:
        await self._call(self._write, lambda: self._compact(revision))

    def _compact(self, revision: int) -> None:
        assert self._db is not None
        if revision <= self._compacted_revision():
            return None
        current = self._current_revision()
        if revision > current:
            raise StorageError(
                f"cannot compact to revision {revision}: it is in the future (current {current})"
            )
        # Below `revision`, a row is dead once a newer row of its key at or below `revision` replaced it,
        # and a deletion is dead once nothing older than `revision` may be read. The row at `revision`
        # itself stays: a watch after revision-1 still replays it.
        self._db.execute(
            "DELETE FROM kine WHERE id < ?1 AND (deleted = 1 OR id < "
            "(SELECT MAX(later.id) FROM kine AS later WHERE later.name = kine.name AND later.id <= ?1))",
            (revision,),
        )
        self._db.execute(
            "INSERT INTO compaction (singleton, revision) VALUES (0, ?)"
            " ON CONFLICT (singleton) DO UPDATE SET revision = excluded.revision",
            (revision,),
        )
        return None

    # -- watch ---------------------------------------------------------------------------------

    def _publish(self, event: WatchEvent) -> None:
        self._published_revision = max(self._published_revision, event.revision)
        for watcher in self._watchers:
            watcher.offer(event)

    def _log_after(self, prefix: str, after_revision: int) -> list[WatchEvent]:
        """The next rows of the log under `prefix` after `after_revision`; Compacted if some are gone."""
        assert self._db is not None
        compacted = self._compacted_revision()
        if after_revision + 1 < compacted:
            raise Compacted(after_revision + 1, compacted)
        where, params = _range_sql(prefix)
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM kine WHERE id > ? AND {where} ORDER BY id LIMIT ?",
            [after_revision, *params, _REPLAY_BATCH],
        ).fetchall()
        return [_Row(row).event() for row in rows]

    def watch(self, prefix: str, after_revision: int) -> AsyncIterator[WatchEvent | Progress]:
        return self._watch(prefix, after_revision)

    async def _watch(self, prefix: str, after_revision: int) -> AsyncIterator[WatchEvent | Progress]:
        watcher = _Watcher(prefix, self.watch_backlog)
        # Registered before the log is read: a write the read misses is certainly queued (duplicates
        # of what the read returned are skipped by revision).
        self._watchers.add(watcher)
        last = after_revision
        try:
            while not self._closed.is_set():
                watcher.overflowed = False
                while True:
                    replayed = await self._call(self._read, self._log_after, prefix, last)
                    for event in replayed:
                        yield event
                        last = event.revision
                    if len(replayed) < _REPLAY_BATCH:
                        break
                while not watcher.overflowed and not self._closed.is_set():
                    if not watcher.events:
                        watcher.wakeup.clear()
                        try:
                            await asyncio.wait_for(watcher.wakeup.wait(), self.progress_interval)
                        except TimeoutError:
                            if not watcher.events and not watcher.overflowed:
                                # Every event up to the published revision reached the queue, which is empty.
                                last = max(last, self._published_revision)
                                yield Progress(last)
                        continue
                    event = watcher.events.popleft()
                    if event.revision > last:
                        yield event
                        last = event.revision
        finally:
            self._watchers.discard(watcher)
