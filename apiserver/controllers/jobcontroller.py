"""The Job controller's loop: Job and pod events mark Jobs dirty, a coalesced pass asks `jobs.plan` what
to do and writes it through the API, as the ReplicaSet controller does for its pods (dirty keys,
expectations for its own writes that the cache does not show yet)."""

from __future__ import annotations

from datetime import UTC, datetime

from podnet.api.keys import object_key

from . import jobs
from .workloads import PodOwners, _in_namespace


class Jobs(PodOwners):
    name = "job"
    needs = ("jobs", "pods")
    owner_kind = "Job"
    component = "job-controller"

    async def sync(self, job: dict) -> None:
        if job["metadata"].get("deletionTimestamp"):
            return
        plan = jobs.plan(job, _in_namespace(self.store("pods"), job["metadata"]["namespace"]), datetime.now(UTC))
        if not await self.write_pods(job, plan) or plan.status == job.get("status"):
            return
        update = self.client.replace_status({**job, "status": plan.status})
        if await self.write(f"update status of job {object_key(job)}", update) and plan.event is not None:
            self.events.record(job, *plan.event)
