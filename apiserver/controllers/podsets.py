"""The StatefulSet and DaemonSet controllers' loops: informer events mark sets dirty, a coalesced pass asks
`statefulsets` or `daemonsets` what to do and writes it through the API as the ReplicaSet loop does
(`_Workloads.write_pod_plan`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from podnet.client import ApiClient, Informer
from podnet.events import NORMAL, EventRecorder

from . import daemonsets, ownerrefs, replicasets, statefulsets
from .runner import Settings
from .workloads import _in_namespace, _key, _selecting, _Workloads


class _PodSets(_Workloads):
    """What both share: pods mark their owner (or, orphaned, the sets that may adopt them) dirty."""

    kind = ""

    def __init__(self, client: ApiClient, informers: dict[str, Informer], settings: Settings):
        super().__init__(client, informers, settings)
        self.events = EventRecorder(client, f"{self.kind.lower()}-controller")

    def expected_store(self) -> dict[str, dict]:
        return self.store("pods")

    def on_event(self, kind: str, event: str, old: dict | None, new: dict | None) -> None:
        if kind == self.needs[0]:
            self.mark([_key(new or old or {})])
            return
        for pod in filter(None, (old, new)):
            ref = ownerrefs.controller_ref(pod)
            if ref is None:
                self.mark(_selecting(self.store(self.needs[0]).values(), pod))
            elif ref.get("kind") == self.kind:
                self.mark([f"{pod['metadata'].get('namespace')}/{ref.get('name')}"])


class StatefulSets(_PodSets):
    """Keeps each StatefulSet's ordinal pods, in order, of its template's current revision."""

    name = "statefulset"
    kind = "StatefulSet"
    needs = ("statefulsets", "pods")

    # Worded as the StatefulSet controller's recordPodEvent words them.
    def created(self, owner: dict, pod_name: str) -> None:
        self.events.record(owner, NORMAL, "SuccessfulCreate",
                           f"create Pod {pod_name} in StatefulSet {owner['metadata']['name']} successful")

    def deleted(self, owner: dict, pod_name: str) -> None:
        self.events.record(owner, NORMAL, "SuccessfulDelete",
                           f"delete Pod {pod_name} in StatefulSet {owner['metadata']['name']} successful")

    async def sync(self, sts: dict) -> None:
        now = datetime.now(UTC)
        plan = statefulsets.plan(sts, _in_namespace(self.store("pods"), sts["metadata"]["namespace"]), now)
        await self.write_pod_plan(sts, plan)
        owned = [p for p in _in_namespace(self.store("pods"), sts["metadata"]["namespace"])
                 if ownerrefs.is_controlled_by(p, sts["metadata"].get("uid"))]
        self.recheck(_key(sts), replicasets.next_availability(sts, owned, now))


class DaemonSets(_PodSets):
    """Keeps one pod of each DaemonSet on every node it should run on."""

    name = "daemonset"
    kind = "DaemonSet"
    needs = ("daemonsets", "pods", "nodes")

    def on_event(self, kind: str, event: str, old: dict | None, new: dict | None) -> None:
        if kind == "nodes":
            if daemonsets.placement_changed(old, new):
                self.mark(self.store("daemonsets"))
            return
        super().on_event(kind, event, old, new)

    async def sync(self, ds: dict) -> None:
        now = datetime.now(UTC)
        pods = _in_namespace(self.store("pods"), ds["metadata"]["namespace"])
        await self.write_pod_plan(ds, daemonsets.plan(ds, list(self.store("nodes").values()), pods, now))
