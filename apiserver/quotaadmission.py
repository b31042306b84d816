"""The ResourceQuota admission of creates: the decision is quota.py's; this reads the namespace's quotas
and objects from storage and holds the namespace while the create is written, so that two creates cannot
both take the last unit of a quota (one API server's creates in a namespace under quota are serialized)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from podnet.apiserver import quota, status
from podnet.apiserver.storage.base import KeyValue, Store

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
            quotas = [q for q in await self._objects("resourcequotas", namespace) if set(quota.hard_of(q)) & set(requested)]
            if quotas:
                objects = {plural: await self._objects(plural, namespace) for plural in quota.kinds_to_count(quotas)}
                in_use = quota.used({r for q in quotas for r in quota.hard_of(q)}, objects)
                why = quota.refusal(quotas, requested, in_use)
                if why is not None:
                    raise status.admission_forbidden(kind, str(obj["metadata"].get("name") or ""), why)
            yield
