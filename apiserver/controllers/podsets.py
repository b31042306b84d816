"""The StatefulSet and DaemonSet controllers' loops: informer events mark sets dirty, a coalesced pass asks
`statefulsets` or `daemonsets` what to do and writes it through the API as the ReplicaSet loop does
(`workloads.PodOwners`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from podnet.api.keys import object_key
from podnet.events import NORMAL

from . import daemonsets, ownerrefs, replicasets, revisions, statefulsets
from .deployments import template_hash
from .workloads import PodOwners, _in_namespace


class _PodSets(PodOwners):
    async def write_revisions(self, owner: dict, hash_of_template: str, keep: tuple[str, ...] = ()) -> None:
        """Records the owner's template as a ControllerRevision and prunes its history (`revisions`)."""
        if owner["metadata"].get("deletionTimestamp"):
            return
        namespace = owner["metadata"]["namespace"]
        plan = revisions.plan(owner, hash_of_template, _in_namespace(self.store("controllerrevisions"), namespace),
                              _in_namespace(self.store("pods"), namespace), keep)
        if plan.create is not None:
            await self.write(f"create controllerrevision {object_key(plan.create)}", self.client.create(plan.create))
        for revision in plan.renumber:
            await self.write(f"renumber controllerrevision {object_key(revision)}", self.client.replace(revision))
        for name in plan.delete:
            await self.write(f"delete controllerrevision {namespace}/{name}",
                             self.client.delete("controllerrevisions", name, namespace))

    async def write_plan(self, owner: dict, plan: replicasets.Plan) -> None:
        if await self.write_pods(owner, plan) and plan.status != owner.get("status"):
            await self.write(f"update status of {self.owner_kind.lower()} {object_key(owner)}",
                             self.client.replace_status({**owner, "status": plan.status}))


class StatefulSets(_PodSets):
    """Keeps each StatefulSet's ordinal pods, in order, of its template's current revision."""

    name = "statefulset"
    needs = ("statefulsets", "pods", "controllerrevisions")
    owner_kind = "StatefulSet"
    component = "statefulset-controller"

    # Worded as the StatefulSet controller's recordPodEvent words them.
    def created(self, owner: dict, pod_name: str) -> None:
        self.events.record(owner, NORMAL, "SuccessfulCreate",
                           f"create Pod {pod_name} in StatefulSet {owner['metadata']['name']} successful")

    def deleted(self, owner: dict, pod_name: str) -> None:
        self.events.record(owner, NORMAL, "SuccessfulDelete",
                           f"delete Pod {pod_name} in StatefulSet {owner['metadata']['name']} successful")

    async def sync(self, sts: dict) -> None:
        now = datetime.now(UTC)
        current = (sts.get("status") or {}).get("currentRevision")
        await self.write_revisions(sts, template_hash((sts.get("spec") or {}).get("template") or {}),
                                   (current,) if current else ())
        pods = _in_namespace(self.store("pods"), sts["metadata"]["namespace"])
        await self.write_plan(sts, statefulsets.plan(sts, pods, now))
        owned = [p for p in pods if ownerrefs.is_controlled_by(p, sts["metadata"].get("uid"))]
        self.recheck(object_key(sts), replicasets.next_availability(sts, owned, now))


class DaemonSets(_PodSets):
    """Keeps one pod of each DaemonSet on every node it should run on."""

    name = "daemonset"
    needs = ("daemonsets", "pods", "nodes", "controllerrevisions")
    owner_kind = "DaemonSet"
    component = "daemonset-controller"

    def on_event(self, kind: str, event: str, old: dict | None, new: dict | None) -> None:
        if kind == "nodes":
            if daemonsets.placement_changed(old, new):
                self.mark(self.store("daemonsets"))
            return
        super().on_event(kind, event, old, new)

    async def sync(self, ds: dict) -> None:
        await self.write_revisions(ds, daemonsets.update_hash(ds))
        pods = _in_namespace(self.store("pods"), ds["metadata"]["namespace"])
        await self.write_plan(ds, daemonsets.plan(ds, list(self.store("nodes").values()), pods, datetime.now(UTC)))
