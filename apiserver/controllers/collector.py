"""The garbage collectors' loops: every kind's informer → `garbagecollection.decide` → API writes; and the
pod garbage collector for pods whose node is gone.

An owner absent from the caches may just not have arrived yet (created a moment ago), so each absence
is confirmed by a live read before a dependent is deleted or loses its reference.
"""

from __future__ import annotations

import time

from podnet.apiserver.deletion import NOT_COLLECTED

from podnet.api.kinds import KINDS, Kind
from podnet.client import ApiClient, ApiError, Informer

from . import garbagecollection as gc
from .runner import Controller, Settings


def informer_key(kind: Kind) -> str:
    """The collector's informer of a kind. Leases get their own, over every namespace: the shared one
    watches kube-node-lease only."""
    return "leases/all" if kind.plural == "leases" else kind.plural


COLLECTED = tuple(k for k in KINDS if k.kind not in NOT_COLLECTED)


def add_informers(client: ApiClient, informers: dict[str, Informer]) -> None:
    for kind in COLLECTED:
        informers.setdefault(informer_key(kind), Informer(client, kind))


class GarbageCollector(Controller):
    name = "garbage-collector"
    needs = tuple(informer_key(k) for k in COLLECTED)
    min_interval = 0.1

    def __init__(self, client: ApiClient, informers: dict[str, Informer], settings: Settings):
        super().__init__(client, informers, settings)
        self._kinds = {informer_key(k): k for k in COLLECTED}

    def on_event(self, kind: str, event: str, old: dict | None, new: dict | None) -> None:
        # What the collector decides depends on who exists, who owns whom and who is being deleted:
        # a status update (most events) changes none of it.
        if event == "DELETED" or new is None:
            self.runner.trigger()
            return
        before, after = (old or {}).get("metadata") or {}, new.get("metadata") or {}
        if any(before.get(k) != after.get(k) for k in ("ownerReferences", "deletionTimestamp", "finalizers")):
            self.runner.trigger()

    async def reconcile(self) -> None:
        objects = [(self._kinds[key], obj) for key in self.needs for obj in self.store(key).values()]
        decisions = gc.decide(objects)
        for action in decisions.actions:
            await self._act(action)
        confirmed: dict[gc.Ref, bool] = {}
        for candidate in decisions.candidates:
            for owner in candidate.absent:
                if owner not in confirmed:
                    confirmed[owner] = await self._gone(owner)
            if all(confirmed[owner] for owner in candidate.absent):
                await self._act(candidate.action)

    async def _gone(self, owner: gc.Ref) -> bool:
        try:
            found = await self.client.get(owner.kind, owner.name, owner.namespace)
        except ApiError as exc:
            if exc.code == 404:
                return True
            raise
        return found["metadata"].get("uid") != owner.uid

    async def _act(self, action: gc.Delete | gc.SetOwners | gc.RemoveFinalizer) -> None:
        target = action.target
        where = f"{target.kind.singular} {target.namespace + '/' if target.namespace else ''}{target.name}"
        if isinstance(action, gc.Delete):
            self.log.info("deleting %s (%s): its owners are gone", where, action.policy)
            await self.write(f"delete {where}", self.client.delete(
                target.kind, target.name, target.namespace, propagation_policy=action.policy,
                preconditions={"uid": target.uid}))
        elif isinstance(action, gc.SetOwners):
            references = list(action.owner_references) if action.owner_references else None
            await self.write(f"update the owners of {where}", self.client.patch(
                target.kind, target.name, {"metadata": {"ownerReferences": references,
                                                        "resourceVersion": action.resource_version}},
                namespace=target.namespace))
        else:
            await self.write(f"remove finalizer {action.finalizer} of {where}", self.client.patch(
                target.kind, target.name, {"metadata": {"finalizers": list(action.remaining) or None,
                                                        "resourceVersion": action.resource_version}},
                namespace=target.namespace))


class PodGarbageCollector(Controller):
    """Deletes, with a grace period of 0, the pods bound to a node that has not existed for the quarantine
    (each absence confirmed by a live read of the node)."""

    name = "pod-garbage-collector"
    needs = ("pods", "nodes")

    def __init__(self, client: ApiClient, informers: dict[str, Informer], settings: Settings):
        super().__init__(client, informers, settings)
        quarantine = settings.orphaned_pod_quarantine
        self.runner.max_interval = max(0.2, min(5.0, quarantine / 4))
        self.missing_since: dict[str, float] = {}

    def on_event(self, kind: str, event: str, old: dict | None, new: dict | None) -> None:
        if kind == "nodes" and event == "DELETED":
            self.runner.trigger()

    async def reconcile(self) -> None:
        self.missing_since, due = gc.orphaned_pods(
            self.store("pods").values(), self.store("nodes").keys(), self.missing_since, time.monotonic(),
            self.settings.orphaned_pod_quarantine)
        absent: dict[str, bool] = {}
        for namespace, name, uid, node in due:
            if node not in absent:
                absent[node] = await self._node_gone(node)
            if absent[node]:
                self.log.info("pod %s/%s: its node %s does not exist, deleting it", namespace, name, node)
                await self.write(f"delete orphaned pod {namespace}/{name}", self.client.delete(
                    "pods", name, namespace, grace_period=0, preconditions={"uid": uid}))

    async def _node_gone(self, node: str) -> bool:
        try:
            await self.client.get("nodes", node)
        except ApiError as exc:
            if exc.code == 404:
                return True
            raise
        return False
