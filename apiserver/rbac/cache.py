"""The API server's RBAC state: roles and bindings read from storage through the watch hub, so that
authorizing a request reads no storage (kube-apiserver's RBAC authorizer reads informers too); the
bootstrap of the default roles at start; and the cluster role aggregation loop.

`RbacCache.policy` is the authorizer's `Policy`, kept current by one list+watch per kind (as the namespace
cache in namespaces.py). `bootstrap(store)` is kube-apiserver's rbac/bootstrap-roles post-start hook:
every default role and binding written or reconciled, the aggregated ones already filled; the cache runs it
(retrying while the store is away) and is `ready` once it is done and every kind is listed, which /readyz
reports. `aggregate()` runs
after every ClusterRole change and writes the aggregated roles whose rules are stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid

from podnet.apiserver.codec import from_storage, to_storage
from podnet.apiserver.rbac.aggregation import stale_aggregates
from podnet.apiserver.rbac.authorizer import Policy
from podnet.apiserver.rbac.defaults import DEFAULT_CLUSTER_ROLE_BINDINGS, reconcile, settled_cluster_roles
from podnet.apiserver.storage.base import AlreadyExists, Conflict, NotFound, StorageError, Store
from podnet.apiserver.watch import DELETED, WatchEnded, WatchHub

from podnet.api.kinds import Kind, lookup

log = logging.getLogger(__name__)

_PLURALS = ("clusterroles", "roles", "clusterrolebindings", "rolebindings")


def _key(kind: Kind, name: str) -> str:
    return f"/registry/{kind.storage_resource}/{name}"


def _policy_key(kind: Kind, storage_key: str) -> str | tuple[str, str]:
    parts = storage_key.rstrip("/").split("/")
    return (parts[-2], parts[-1]) if kind.namespaced else parts[-1]


class RbacCache:
    def __init__(self, store: Store, hub: WatchHub):
        self.store = store
        self.hub = hub
        self.policy = Policy()
        self._tables = {"clusterroles": self.policy.cluster_roles, "roles": self.policy.roles,
                        "clusterrolebindings": self.policy.cluster_role_bindings,
                        "rolebindings": self.policy.role_bindings}
        self._synced = {plural: asyncio.Event() for plural in _PLURALS}
        self._bootstrapped = False
        self._roles_changed = asyncio.Event()

    @property
    def ready(self) -> bool:
        """The defaults are written and every kind listed: decisions are those of the stored policy."""
        return self._bootstrapped and all(event.is_set() for event in self._synced.values())

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._bootstrap(), name="rbac bootstrap")
            for plural in _PLURALS:
                tasks.create_task(self._follow(lookup(plural)), name=f"rbac cache {plural}")
            tasks.create_task(self._aggregate_on_change(), name="clusterrole aggregation")

    async def _follow(self, kind: Kind) -> None:
        table: dict = self._tables[kind.plural]
        prefix = f"/registry/{kind.storage_resource}/"
        identity = {"apiVersion": kind.api_version, "kind": kind.kind}
        backoff = 0.05
        while True:
            try:
                kvs, revision = await self.store.list(prefix)
                table.clear()
                table.update({_policy_key(kind, kv.key): from_storage(kv.value, kv.mod_revision) for kv in kvs})
                self._changed(kind)
                self._synced[kind.plural].set()
                subscription = await self.hub.subscribe(prefix, revision, identity)
                try:
                    while True:
                        change = await subscription.next(None)
                        if change is None:
                            continue
                        if change.type == DELETED:
                            table.pop(_policy_key(kind, change.key), None)
                        else:
                            table[_policy_key(kind, change.key)] = change.object
                        self._changed(kind)
                        backoff = 0.05
                finally:
                    await subscription.close()
            except (StorageError, WatchEnded, OSError, TimeoutError, ValueError) as e:
                # Keep the last state: refusing everyone while storage is away would lock out the repair.
                log.warning("RBAC cache of %s lost its watch, relisting in %.2fs: %s", kind.plural, backoff, e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _bootstrap(self) -> None:
        backoff = 0.05
        while True:
            try:
                await bootstrap(self.store)
                self._bootstrapped = True
                return
            except (StorageError, OSError, TimeoutError) as e:  # the store may come up after the server
                log.warning("RBAC bootstrap failed, retrying in %.2fs: %s", backoff, e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    def _changed(self, kind: Kind) -> None:
        if kind.plural == "clusterroles":
            self._roles_changed.set()

    async def _aggregate_on_change(self) -> None:
        await self._synced["clusterroles"].wait()
        while True:
            await self._roles_changed.wait()
            self._roles_changed.clear()
            try:
                await self.aggregate()
            except (StorageError, OSError, TimeoutError) as e:
                log.warning("cluster role aggregation failed, retrying: %s", e)
                await asyncio.sleep(1.0)
                self._roles_changed.set()

    async def aggregate(self) -> None:
        kind = lookup("clusterroles")
        for name, rules in stale_aggregates(self.policy.cluster_roles).items():
            role = self.policy.cluster_roles[name]
            revision = int((role.get("metadata") or {}).get("resourceVersion") or 0)
            with contextlib.suppress(Conflict, NotFound):  # a newer state is on its way through the watch
                await self.store.update(_key(kind, name), to_storage(role | {"rules": rules}), revision)


def _new(obj: dict) -> dict:
    made = json.loads(json.dumps(obj))
    made["metadata"] |= {"uid": str(uuid.uuid4()),
                         "creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return made


async def bootstrap(store: Store) -> None:
    """Writes the default cluster roles and bindings, reconciling those already there."""
    for plural, defaults in (("clusterroles", list(settled_cluster_roles().values())),
                             ("clusterrolebindings", DEFAULT_CLUSTER_ROLE_BINDINGS)):
        kind = lookup(plural)
        for default in defaults:
            key = _key(kind, default["metadata"]["name"])
            for _ in range(5):
                kv = await store.get(key)
                wanted = reconcile(default, json.loads(kv.value) if kv else None)
                if wanted is None:
                    break
                try:
                    if kv is None:
                        await store.create(key, to_storage(_new(wanted)))
                    else:
                        await store.update(key, to_storage(wanted), kv.mod_revision)
                    break
                except (AlreadyExists, Conflict):
                    continue  # another API server wrote it first: reconcile what it wrote
