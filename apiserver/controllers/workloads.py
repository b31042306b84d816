"""The ReplicaSet and Deployment controllers' loops: informer events mark workloads dirty, a coalesced
pass asks `replicasets` or `deployments` what to do and writes it through the API.

Their caches lag behind their own writes: each remembers the objects it has just created or deleted until
the watch shows them (`Expectations`) and leaves the workload alone meanwhile, or it would act twice; every
update carries the resourceVersion it was computed from, so a stale decision is a 409 and another pass.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Protocol

from podnet.api.keys import object_key
from podnet.client import ApiClient, ApiError, Informer
from podnet.events import NORMAL, EventRecorder, pod_created, pod_deleted

from . import deployments, ownerrefs, replicasets
from .runner import Controller, Settings

# How long a write may take to come back through the watch before the controller stops waiting for it.
EXPECTATION_TIMEOUT = 30.0


def _in_namespace(store: dict[str, dict], namespace: str) -> list[dict]:
    return [obj for obj in store.values() if obj["metadata"].get("namespace") == namespace]


def _selecting(owners: Iterable[dict], obj: dict) -> list[str]:
    """Keys of the owners in `obj`'s namespace whose selector picks it: who may adopt an orphan."""
    meta = obj["metadata"]
    keys = []
    for owner in owners:
        if owner["metadata"].get("namespace") != meta.get("namespace"):
            continue
        if ownerrefs.selector_of(owner).matches(meta.get("labels")):
            keys.append(object_key(owner))
    return keys


class Expectations:
    """Per workload, the names it has just created or deleted that the cache does not show yet."""

    def __init__(self) -> None:
        self._pending: dict[str, tuple[set[str], set[str], float]] = {}

    def expect(self, key: str, appear: set[str], vanish: set[str]) -> None:
        if appear or vanish:
            self._pending[key] = (appear, vanish, time.monotonic() + EXPECTATION_TIMEOUT)

    def waiting(self, key: str, store: dict[str, dict]) -> bool:
        pending = self._pending.get(key)
        if pending is None:
            return False
        namespace = key.split("/", 1)[0]
        appear, vanish, deadline = pending
        settled = all(f"{namespace}/{n}" in store for n in appear) and not any(
            f"{namespace}/{n}" in store and not store[f"{namespace}/{n}"]["metadata"].get("deletionTimestamp")
            for n in vanish)
        if settled or time.monotonic() > deadline:
            del self._pending[key]
            return False
        return True


class _Workloads(Controller):
    """Dirty keys of the kind in `needs[0]`, synced one by one unless their writes are still on their way."""

    def __init__(self, client: ApiClient, informers: dict[str, Informer], settings: Settings):
        super().__init__(client, informers, settings)
        self.dirty: set[str] = set()
        self.expectations = Expectations()
        self._rechecks: dict[str, asyncio.TimerHandle] = {}

    def recheck(self, key: str, delay: float | None) -> None:
        """Looks at `key` again after `delay` seconds (a time-based change no event announces); one pending
        recheck per key, the latest wins."""
        previous = self._rechecks.pop(key, None)
        if previous is not None:
            previous.cancel()
        if delay is not None:
            self._rechecks[key] = asyncio.get_running_loop().call_later(delay, self.mark, [key])

    async def run(self) -> None:
        for kind in self.needs:
            await self.informers[kind].wait_synced()
        self.dirty.update(self.store(self.needs[0]))
        await super().run()

    def mark(self, keys: Iterable[str]) -> None:
        self.dirty.update(keys)
        if self.dirty:
            self.runner.trigger()

    def expected_store(self) -> dict[str, dict]:
        """The cache the expectations are about."""
        raise NotImplementedError

    async def reconcile(self) -> None:
        dirty, self.dirty = self.dirty, set()
        if not dirty:
            dirty = set(self.store(self.needs[0]))  # the periodic resync looks at everything
        for key in sorted(dirty):
            if self.expectations.waiting(key, self.expected_store()):
                self.dirty.add(key)  # looked at again when its writes show up
                continue
            obj = self.store(self.needs[0]).get(key)
            if obj is not None:
                await self.sync(obj)

    async def sync(self, obj: dict) -> None:
        raise NotImplementedError

    async def may_adopt(self, owner: dict) -> bool:
        """Whether `owner` may adopt, judged on a live read rather than the cache (RecheckDeletionTimestamp):
        an owner whose deletion the cache has not shown yet must not take back what the garbage collector
        is releasing from it."""
        meta = owner["metadata"]
        try:
            live = await self.client.get(self.needs[0], meta["name"], meta["namespace"])
        except ApiError:
            return False
        return live["metadata"].get("uid") == meta.get("uid") and not live["metadata"].get("deletionTimestamp")


class PodPlan(Protocol):
    """What a pod owner's pure plan says of its pods (replicasets.Plan, jobs.Plan)."""

    adopt: tuple[dict, ...]
    release: tuple[dict, ...]
    create: tuple[dict, ...]
    delete: tuple[str, ...]


class PodOwners(_Workloads):
    """Workloads that own pods themselves (ReplicaSets, Jobs): the kind in `needs[0]`, whose controller
    references say `owner_kind`; their plans adopt, release, create and delete pods."""

    owner_kind = ""
    component = ""  # the controller's name in the events it records

    def __init__(self, client: ApiClient, informers: dict[str, Informer], settings: Settings):
        super().__init__(client, informers, settings)
        self.events = EventRecorder(client, self.component)

    def expected_store(self) -> dict[str, dict]:
        return self.store("pods")

    def created(self, owner: dict, pod_name: str) -> None:
        pod_created(self.events, owner, pod_name)

    def deleted(self, owner: dict, pod_name: str) -> None:
        pod_deleted(self.events, owner, pod_name)

    def on_event(self, kind: str, event: str, old: dict | None, new: dict | None) -> None:
        if kind == self.needs[0]:
            self.mark([object_key(new or old or {})])
            return
        for pod in filter(None, (old, new)):
            ref = ownerrefs.controller_ref(pod)
            if ref is None:
                self.mark(_selecting(self.store(self.needs[0]).values(), pod))
            elif ref.get("kind") == self.owner_kind:
                self.mark([f"{pod['metadata'].get('namespace')}/{ref.get('name')}"])

    async def write_pods(self, owner: dict, plan: PodPlan) -> bool:
        """Carries out what `plan` says of the owner's pods; False when it may not adopt (being deleted:
        the event that shows it brings the owner back) and nothing was done."""
        key, namespace = object_key(owner), owner["metadata"]["namespace"]
        if plan.adopt and not await self.may_adopt(owner):
            return False
        for pod in plan.adopt:
            await self.write(f"adopt pod {object_key(pod)} into {key}", self.client.replace(pod))
        for pod in plan.release:
            await self.write(f"release pod {object_key(pod)} from {key}", self.client.replace(pod))
        created, removed = set(), set()
        for pod in plan.create:
            made = await self.write(f"create pod for {key}", self.client.create(pod))
            if made:
                created.add(made["metadata"]["name"])
                self.created(owner, made["metadata"]["name"])
        for name in plan.delete:
            if await self.write(f"delete pod {namespace}/{name}", self.client.delete("pods", name, namespace)) is not None:
                removed.add(name)
                self.deleted(owner, name)
        self.expectations.expect(key, created, removed)
        return True


class ReplicaSets(PodOwners):
    """Keeps `replicas` pods of each ReplicaSet's template, adopting and releasing pods by its selector."""

    name = "replicaset"
    needs = ("replicasets", "pods")
    owner_kind = "ReplicaSet"
    component = "replicaset-controller"

    def _related(self, rs: dict, pods: list[dict]) -> list[dict]:
        """The pods of the other ReplicaSets of the same Deployment."""
        owner = ownerrefs.controller_ref(rs)
        if owner is None:
            return []
        siblings = {other["metadata"].get("uid") for other in _in_namespace(self.store("replicasets"), rs["metadata"]["namespace"])
                    if other is not rs and ownerrefs.is_controlled_by(other, owner.get("uid"))}
        return [p for p in pods if (ownerrefs.controller_ref(p) or {}).get("uid") in siblings]

    async def sync(self, rs: dict) -> None:
        key, namespace = object_key(rs), rs["metadata"]["namespace"]
        pods = _in_namespace(self.store("pods"), namespace)
        now = datetime.now(UTC)
        plan = replicasets.plan(rs, pods, now, self._related(rs, pods))
        if not await self.write_pods(rs, plan):
            return
        if plan.status != rs.get("status"):
            await self.write(f"update status of replicaset {key}", self.client.replace_status({**rs, "status": plan.status}))
        owned = [p for p in pods if ownerrefs.is_controlled_by(p, rs["metadata"].get("uid"))]
        self.recheck(key, replicasets.next_availability(rs, owned, now))


class Deployments(_Workloads):
    """Rolls each Deployment's ReplicaSets towards its template and replica count, and reports status."""

    name = "deployment"
    needs = ("deployments", "replicasets", "pods")

    def __init__(self, client: ApiClient, informers: dict[str, Informer], settings: Settings):
        super().__init__(client, informers, settings)
        self.events = EventRecorder(client, "deployment-controller")

    def _scaled(self, deployment: dict, name: str, before: int, after: int) -> None:
        if before != after:
            self.events.record(deployment, NORMAL, "ScalingReplicaSet", deployments.scaling_message(name, before, after))

    def expected_store(self) -> dict[str, dict]:
        return self.store("replicasets")

    def _deployment_of(self, obj: dict) -> list[str]:
        ref = ownerrefs.controller_ref(obj)
        namespace = obj["metadata"].get("namespace")
        if ref is None:
            return _selecting(self.store("deployments").values(), obj) if obj.get("kind") == "ReplicaSet" else []
        if ref.get("kind") == "Deployment":
            return [f"{namespace}/{ref.get('name')}"]
        if ref.get("kind") == "ReplicaSet":
            rs = self.store("replicasets").get(f"{namespace}/{ref.get('name')}")
            return self._deployment_of(rs) if rs is not None and ownerrefs.controller_ref(rs) else []
        return []

    def on_event(self, kind: str, event: str, old: dict | None, new: dict | None) -> None:
        if kind == "deployments":
            self.mark([object_key(new or old or {})])
        elif kind == "replicasets":
            for rs in filter(None, (old, new)):
                self.mark(self._deployment_of({**rs, "kind": "ReplicaSet"}))
        else:
            # A Recreate rollout waits for old pods to be gone; pods an older podnet let the Deployment own
            # are handed over.
            pod = new or old or {}
            if event == "DELETED" or (ownerrefs.controller_ref(pod) or {}).get("kind") == "Deployment":
                self.mark(self._deployment_of(pod))

    async def sync(self, deployment: dict) -> None:
        key, namespace = object_key(deployment), deployment["metadata"]["namespace"]
        actions = deployments.sync(deployment, _in_namespace(self.store("replicasets"), namespace),
                                   _in_namespace(self.store("pods"), namespace), datetime.now(UTC))
        if actions.adopt and not await self.may_adopt(deployment):
            return  # being deleted: the event that shows it brings this Deployment back
        for rs in actions.adopt:
            await self.write(f"adopt replicaset {object_key(rs)} into {key}", self.client.replace(rs))
        for rs in actions.release:
            await self.write(f"release replicaset {object_key(rs)} from {key}", self.client.replace(rs))
        for pod in actions.release_pods:
            await self.write(f"hand pod {object_key(pod)} of {key} to its replicaset", self.client.replace(pod))
        for name in actions.delete_pods:
            await self.write(f"delete pod {namespace}/{name} that {key} owned directly",
                             self.client.delete("pods", name, namespace))
        created = set()
        if actions.create is not None:
            if await self.write(f"create replicaset {object_key(actions.create)}", self.client.create(actions.create)):
                created.add(actions.create["metadata"]["name"])
                self._scaled(deployment, actions.create["metadata"]["name"], 0, actions.create["spec"]["replicas"])
        for rs in actions.update:
            before = replicasets.replicas_of(self.store("replicasets").get(object_key(rs)) or rs)
            if await self.write(f"update replicaset {object_key(rs)}", self.client.replace(rs)):
                self._scaled(deployment, rs["metadata"]["name"], before, rs["spec"]["replicas"])
        removed = set()
        for name in actions.delete:
            if await self.write(f"delete old replicaset {namespace}/{name}",
                                self.client.delete("replicasets", name, namespace)) is not None:
                removed.add(name)
        self.expectations.expect(key, created, removed)
        self.recheck(key, deployments.stuck_check_in(
            {**deployment, "status": actions.status or deployment.get("status")}, datetime.now(UTC)))
        current = deployment
        if actions.annotations:
            patch = {"metadata": {"annotations": actions.annotations,
                                  "resourceVersion": deployment["metadata"].get("resourceVersion")}}
            current = await self.write(f"annotate deployment {key}", self.client.patch(
                "deployments", deployment["metadata"]["name"], patch, namespace=namespace))
        if current is not None and actions.status is not None:
            await self.write(f"update status of deployment {key}",
                             self.client.replace_status({**current, "status": actions.status}))
