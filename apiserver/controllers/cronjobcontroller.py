"""The CronJob controller's loop: CronJob and Job events mark CronJobs dirty; a pass asks `cronjobs.plan`
what to do now, writes it through the API, and comes back to each CronJob when its schedule next fires.

The clock is the class's `clock` (UTC now), so what the loop does at a given time can be driven by a test
without waiting for the minute to come round.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from podnet.api.events import NORMAL
from podnet.api.keys import object_key
from podnet.client import ApiClient, Informer
from podnet.events import EventRecorder

from . import cronjobs, ownerrefs
from .runner import Settings
from .workloads import _in_namespace, _Workloads

# Looked at again this long after the schedule's time, so that the time has surely come.
WAKE_MARGIN = 0.1


def _utc_now() -> datetime:
    return datetime.now(UTC)


class CronJobs(_Workloads):
    name = "cronjob"
    needs = ("cronjobs", "jobs")
    clock: Callable[[], datetime] = staticmethod(_utc_now)

    def __init__(self, client: ApiClient, informers: dict[str, Informer], settings: Settings):
        super().__init__(client, informers, settings)
        self.events = EventRecorder(client, "cronjob-controller")

    def expected_store(self) -> dict[str, dict]:
        return self.store("jobs")

    def on_event(self, kind: str, event: str, old: dict | None, new: dict | None) -> None:
        if kind == "cronjobs":
            self.mark([object_key(new or old or {})])
            return
        for job in filter(None, (old, new)):
            ref = ownerrefs.controller_ref(job)
            if ref is not None and ref.get("kind") == "CronJob":
                self.mark([f"{job['metadata'].get('namespace')}/{ref.get('name')}"])

    async def sync(self, cronjob: dict) -> None:
        key, namespace = object_key(cronjob), cronjob["metadata"]["namespace"]
        now = self.clock()
        plan = cronjobs.plan(cronjob, _in_namespace(self.store("jobs"), namespace), now)
        for event in plan.events:
            self.events.record(cronjob, *event)
        status = plan.status
        removed = set()
        for name in plan.delete:
            if await self.write(f"delete job {namespace}/{name}", self.client.delete(
                    "jobs", name, namespace, propagation_policy="Background")) is not None:
                removed.add(name)
        created = set()
        if plan.create is not None:
            made = await self.write(f"create job for {key}", self.client.create(plan.create))
            if made is None:
                status = cronjob.get("status") or {}  # not run: lastScheduleTime stays, the next pass tries again
            else:
                created.add(made["metadata"]["name"])
                status = {**status, "active": [*status.get("active", []), cronjobs.job_reference(made)]}
                self.events.record(cronjob, NORMAL, "SuccessfulCreate", f"Created job {made['metadata']['name']}")
        self.expectations.expect(key, created, removed)
        if status != (cronjob.get("status") or {}):
            await self.write(f"update status of cronjob {key}", self.client.replace_status({**cronjob, "status": status}))
        if plan.wake_at is not None:
            self.recheck(key, max((plan.wake_at - now).total_seconds(), 0.0) + WAKE_MARGIN)
