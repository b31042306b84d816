"""The LimitRanger admission of new pods: reads the namespace's LimitRanges from storage and lets
limitrange.py default the pod's resources and judge them (a refusal is kube-apiserver's 403)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from podnet.apiserver import limitrange, status
from podnet.apiserver.storage.base import Store

from podnet.api.kinds import Kind, lookup


class LimitRangeAdmission:
    def __init__(self, store: Store, storage: Callable[[Awaitable[Any]], Awaitable[Any]],
                 prefix: Callable[[Kind, str], str]):
        self._store = store
        self._storage = storage
        self._prefix = prefix
        self._kind = lookup("limitranges")

    async def admit(self, kind: Kind, namespace: str, obj: dict) -> None:
        if kind.kind != "Pod":
            return
        kvs, _ = await self._storage(self._store.list(self._prefix(self._kind, namespace)))
        if not kvs:
            return
        ranges = [json.loads(kv.value) for kv in kvs]
        try:
            limitrange.apply_defaults(obj, ranges)
            why = limitrange.refusal(obj, ranges)
        except ValueError as e:  # a quantity kube-apiserver could not have decoded
            raise status.bad_request(f'Pod in version "v1" cannot be handled as a Pod: {e}') from None
        if why is not None:
            raise status.admission_forbidden(kind, str(obj["metadata"].get("name") or ""), why)
