"""The ResourceQuota admission of creates: the decision is quota.py's; this reads the namespace's quotas
and objects from storage, and charges what it admits to each quota's status.used under the quota's mod
revision before the object is written, as kube-apiserver's admission does: of two API servers admitting
the last unit at once, one writes the charge and the other, finding the quota changed, reads it again and
counts the charge. One server's creates in a namespace under quota are also serialized among themselves,
which spares them those conflicts. A charge whose object is then not written is taken back by the
resourcequota controller's next count."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from podnet.apiserver import quota, status
from podnet.apiserver.codec import to_storage
from podnet.apiserver.storage.base import Conflict, KeyValue, NotFound, Store

from podnet.api.kinds import Kind, lookup

T = TypeVar("T")


class QuotaAdmission:
    def __init__(self, store: Store, storage: Callable[[Awaitable[T]], Awaitable[T]],
                 prefix: Callable[[Kind, str], str]):
        self._store = store
        self._storage = storage  # the handlers' storage call: their deadline, their 503
        self._prefix = prefix
        self._locks: dict[str, asyncio.Lock] = {}

    async def _objects(self, plural: str, namespace: str) -> list[dict]:
        kvs: list[KeyValue]
        kvs, _ = await self._storage(self._store.list(self._prefix(lookup(plural), namespace)))
        return [json.loads(kv.value) for kv in kvs]

    @contextlib.asynccontextmanager
    async def admitting(self, kind: Kind, namespace: str, obj: dict, old: dict | None = None) -> AsyncIterator[None]:
        """Raises 403 (kube-apiserver's `exceeded quota: ...`) when the object (created, or updated from
        `old`: only what it adds counts, a Service becoming a LoadBalancer) is over a quota of its namespace;
        otherwise holds the namespace's quotas until the caller's write is done."""
        requested = quota.added(kind, obj, old)
        lock = self._locks.setdefault(namespace, asyncio.Lock())
        async with lock:
            for _ in range(_CHARGE_ATTEMPTS):
                if await self._charge(kind, namespace, obj, requested):
                    break
            else:
                raise status.conflict(lookup("resourcequotas"), namespace, "its quotas are being modified too often; "
                                      "please try again")
            yield

    async def _charge(self, kind: Kind, namespace: str, obj: dict, requested: dict[str, int]) -> bool:
        """Admits `obj` against the namespace's quotas and charges them; False when a quota changed meanwhile."""
        kvs: list[KeyValue]
        kvs, _ = await self._storage(self._store.list(self._prefix(lookup("resourcequotas"), namespace)))
        stored = [(kv, json.loads(kv.value)) for kv in kvs]
        stored = [(kv, q) for kv, q in stored if set(quota.hard_of(q)) & set(requested)]
        if not stored:
            return True
        quotas = [q for _, q in stored]
        objects = {plural: await self._objects(plural, namespace) for plural in quota.kinds_to_count(quotas)}
        use = quota.in_use(quotas, quota.used({r for q in quotas for r in quota.hard_of(q)}, objects))
        why = quota.refusal(quotas, requested, use)
        if why is not None:
            raise status.admission_forbidden(kind, str(obj["metadata"].get("name") or ""), why)
        for kv, resource_quota in stored:
            try:
                await self._storage(self._store.update(kv.key, to_storage(quota.charged(resource_quota, requested, use)),
                                                       kv.mod_revision))
            except (Conflict, NotFound):
                return False
        return True


# An admission whose quota another writer changed between its read and its charge reads again this many times.
_CHARGE_ATTEMPTS = 10
