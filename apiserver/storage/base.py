"""The storage interface the API server is written against, and its errors.

Two implementations: `etcd` (aetcd, a real etcd cluster) and `sqlite` (embedded, a revision log as
k3s's kine keeps it). Both pass the one contract suite in tests/test_storage_contract.py.

Keys are `/registry/<resource>/<namespace>/<name>` (cluster-scoped: `/registry/<resource>/<name>`).
Values are opaque bytes (the API server stores encoded objects). A revision is a cluster-wide,
strictly increasing integer: every successful write gets a new one, and it is the objects'
resourceVersion.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol, Self


class StorageError(Exception):
    """Base of every storage error."""


class NotFound(StorageError):
    pass


class AlreadyExists(StorageError):
    pass


class Conflict(StorageError):
    """The key's mod revision is not the one the write expected."""

    def __init__(self, key: str, current: KeyValue | None):
        super().__init__(key)
        self.key = key
        self.current = current


class Compacted(StorageError):
    """The asked revision has been compacted away: the client must relist (HTTP 410 Gone)."""

    def __init__(self, requested: int, compacted: int):
        super().__init__(f"requested revision {requested} is older than the compacted revision {compacted}")
        self.requested = requested
        self.compacted = compacted


class FutureRevision(StorageError):
    """The asked revision is newer than the store's (HTTP 504 "Too large resource version", as kube-apiserver)."""

    def __init__(self, requested: int, current: int):
        super().__init__(f"revision {requested} is in the future (current {current})")
        self.requested = requested
        self.current = current


class Unavailable(StorageError):
    """The backend cannot be reached now (HTTP 503); the caller may retry."""


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Guard:
    """Another key a write depends on, at the mod revision its writer read: a namespaced object's create
    depends on its namespace as it was when found open, so that it cannot land once the namespace is
    marked for deletion, whichever API server marks it."""

    key: str
    mod_revision: int


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: Literal["PUT", "DELETE"]
    key: str
    revision: int
    value: bytes | None  # the new value (PUT); None for DELETE
    prev_value: bytes | None  # the value before this event (always set for DELETE)
    created: bool  # PUT that created the key


@dataclass(frozen=True, slots=True)
class Progress:
    """A watch progress notification: nothing under the prefix changed up to `revision` (a BOOKMARK)."""

    revision: int


class OpensAsContext:
    """`async with store:` opens the store and closes it on the way out (for classes with open and close)."""

    async def __aenter__(self) -> Self:
        await self.open()  # type: ignore[attr-defined]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()  # type: ignore[attr-defined]


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def current_revision(self) -> int: ...

    async def get(self, key: str) -> KeyValue | None: ...

    async def list(
        self, prefix: str, *, revision: int = 0, limit: int = 0, start_after: str | None = None
    ) -> tuple[list[KeyValue], int]:
        """Keys under `prefix` in key order at `revision` (0: now), and the revision the list reflects.

        With `limit`, at most that many; `start_after` continues a paged list after that key.
        Raises Compacted when `revision` is older than the compacted revision.
        """
        ...

    async def create(self, key: str, value: bytes, *, beside: Guard | None = None) -> int:
        """Writes a key that must not exist; returns the new revision. Raises AlreadyExists. With `beside`,
        only while that other key is live at that mod revision (else NotFound or Conflict for it)."""
        ...

    async def update(self, key: str, value: bytes, expected_mod_revision: int) -> int:
        """Replaces a key whose mod revision is `expected_mod_revision` (0: any); returns the new
        revision. Raises NotFound or Conflict."""
        ...

    async def delete(self, key: str, expected_mod_revision: int = 0) -> tuple[int, KeyValue]:
        """Deletes a key (when its mod revision matches, 0: any); returns the revision and the deleted
        value. Raises NotFound or Conflict."""
        ...

    def watch(self, prefix: str, after_revision: int) -> AsyncIterator[WatchEvent | Progress]:
        """Every change under `prefix` with a revision greater than `after_revision`, in revision order,
        then changes as they happen. Raises Compacted (at once or when iterated) if `after_revision` is
        older than the compacted revision; Unavailable when the backend is lost."""
        ...

    async def compact(self, revision: int) -> None:
        """Forgets history before `revision`: watches and lists from older revisions get Compacted."""
        ...
