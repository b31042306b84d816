"""Which namespaces exist and which are terminating, as the create path's admission sees them.

kube-apiserver's NamespaceLifecycle admission reads a namespace informer rather than etcd; so does
this: a list, then the namespaces' watch cache. A create into a namespace the cache knows costs no
storage read. The cache may lag a write by moments, so only its "exists" and "terminating" answers
are trusted; "unknown" sends the caller to storage (a namespace created an instant ago). An "exists"
comes with the namespace's mod revision, which the create's write is guarded by (storage.base.Guard):
should the namespace have changed since, the write is refused and the caller asks storage.
"""

from __future__ import annotations

import asyncio
import json
import logging
from enum import Enum

from podnet.apiserver.storage.base import StorageError, Store
from podnet.apiserver.watch import DELETED, WatchEnded, WatchHub

from podnet.api.kinds import Kind

log = logging.getLogger(__name__)


class NamespaceState(Enum):
    ACTIVE = "active"
    TERMINATING = "terminating"
    UNKNOWN = "unknown"


def _terminating(obj: dict) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


class NamespaceLifecycle:
    def __init__(self, store: Store, hub: WatchHub, kind: Kind, prefix: str):
        self.store = store
        self.hub = hub
        self.identity = {"apiVersion": kind.api_version, "kind": kind.kind}
        self.prefix = prefix
        self.revision = 0
        # name -> (terminating, mod revision); None: not synced
        self._namespaces: dict[str, tuple[bool, int]] | None = None
        self._advanced = asyncio.Event()

    def state(self, name: str) -> NamespaceState:
        if self._namespaces is None or name not in self._namespaces:
            return NamespaceState.UNKNOWN
        return NamespaceState.TERMINATING if self._namespaces[name][0] else NamespaceState.ACTIVE

    def mod_revision(self, name: str) -> int:
        """The mod revision of the namespace as the cache last saw it (0: unknown)."""
        return self._namespaces[name][1] if self._namespaces is not None and name in self._namespaces else 0

    async def wait_for(self, revision: int, timeout: float) -> bool:
        """Waits until the cache reflects `revision`; False when `timeout` passes first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.revision < revision:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            advanced = self._advanced
            try:
                async with asyncio.timeout(remaining):
                    await advanced.wait()
            except TimeoutError:
                return False
        return True

    def _advance(self, revision: int) -> None:
        self.revision = max(self.revision, revision)
        advanced, self._advanced = self._advanced, asyncio.Event()
        advanced.set()

    async def run(self) -> None:
        backoff = 0.05
        while True:
            try:
                kvs, revision = await self.store.list(self.prefix)
                self._namespaces = {kv.key.rpartition("/")[2]: (_terminating(json.loads(kv.value)), kv.mod_revision)
                                    for kv in kvs}
                self._advance(revision)
                subscription = await self.hub.subscribe(self.prefix, revision, self.identity)
                try:
                    while True:
                        change = await subscription.next(None)
                        if change is None:
                            continue
                        name = change.key.rpartition("/")[2]
                        if change.type == DELETED:
                            self._namespaces.pop(name, None)
                        else:
                            self._namespaces[name] = (_terminating(change.object), change.revision)
                        self._advance(change.revision)
                        backoff = 0.05
                finally:
                    await subscription.close()
            except (StorageError, WatchEnded, OSError, TimeoutError, ValueError) as e:
                self._namespaces = None
                log.warning("namespace cache lost its watch, relisting in %.2fs: %s", backoff, e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
