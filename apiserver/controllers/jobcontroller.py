"""The Job controller's loop: Job and pod events mark Jobs dirty, a coalesced pass asks `jobs.plan` what
to do and writes it through the API, on the ReplicaSet controller's skeleton (dirty keys, expectations
for its own writes that the cache does not show yet)."""

from __future__ import annotations

from datetime import UTC, datetime

from podnet.client import ApiClient, Informer
from podnet.events import EventRecorder, pod_created, pod_deleted

from . import jobs, ownerrefs
from .runner import Settings
from .workloads import _in_namespace, _key, _selecting, _Workloads


class Jobs(_Workloads):
    name = "job"
    needs = ("jobs", "pods")

    def __init__(self, client: ApiClient, informers: dict[str, Informer], settings: Settings):
        super().__init__(client, informers, settings)
        self.events = EventRecorder(client, "job-controller")

    def expected_store(self) -> dict[str, dict]:
        return self.store("pods")

    def on_event(self, kind: str, event: str, old: dict | None, new: dict | None) -> None:
        if kind == "jobs":
            self.mark([_key(new or old or {})])
            return
        for pod in filter(None, (old, new)):
            ref = ownerrefs.controller_ref(pod)
            if ref is None:
                self.mark(_selecting(self.store("jobs").values(), pod))
            elif ref.get("kind") == "Job":
                self.mark([f"{pod['metadata'].get('namespace')}/{ref.get('name')}"])

    async def sync(self, job: dict) -> None:
        key, namespace = _key(job), job["metadata"]["namespace"]
        if job["metadata"].get("deletionTimestamp"):
            return
        plan = jobs.plan(job, _in_namespace(self.store("pods"), namespace), datetime.now(UTC))
        if plan.adopt and not await self.may_adopt(job):
            return
        for pod in plan.adopt:
            await self.write(f"adopt pod {_key(pod)} into {key}", self.client.replace(pod))
        for pod in plan.release:
            await self.write(f"release pod {_key(pod)} from {key}", self.client.replace(pod))
        created, removed = set(), set()
        for pod in plan.create:
            made = await self.write(f"create pod for {key}", self.client.create(pod))
            if made:
                created.add(made["metadata"]["name"])
                pod_created(self.events, job, made["metadata"]["name"])
        for name in plan.delete:
            if await self.write(f"delete pod {namespace}/{name}", self.client.delete("pods", name, namespace)) is not None:
                removed.add(name)
                pod_deleted(self.events, job, name)
        self.expectations.expect(key, created, removed)
        if plan.status != job.get("status"):
            if await self.write(f"update status of job {key}", self.client.replace_status({**job, "status": plan.status})):
                if plan.event is not None:
                    self.events.record(job, *plan.event)
