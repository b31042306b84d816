"""What a Job should do, pure: as kube-controller-manager's Job controller, for NonIndexed Jobs.

A Job claims the pods its selector picks (finished ones too: they are its record of success and failure),
keeps `parallelism` of them running while fewer than `completions` have succeeded (pods from its template,
`generateName: <job>-`; without `completions`, until one has succeeded and the rest have ended), and
finishes: `Complete` once `completions` pods have succeeded, `Failed` (BackoffLimitExceeded) once more than
`backoffLimit` have failed; a finished Job deletes the pods still running, and a Failed one counts them as
failed. A suspended Job runs none. Counts never go down when finished pods are deleted, as the controller's
tracking of terminated pods keeps them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from podnet.api.events import NORMAL, WARNING

from . import ownerrefs
from .replicasets import BURST_REPLICAS, pod_from_template
from .scheduling import is_ready

COMPLETE_REASON, COMPLETE_MESSAGE = "CompletionsReached", "Reached expected number of succeeded pods"
FAILED_REASON, FAILED_MESSAGE = "BackoffLimitExceeded", "Job has reached the specified backoff limit"


def _timestamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def finished(job: dict) -> str | None:
    """`Complete` or `Failed` when the Job has that condition, else None."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return condition["type"]
    return None


def _phase(pod: dict) -> str:
    return (pod.get("status") or {}).get("phase") or "Pending"


@dataclass(frozen=True, slots=True)
class Plan:
    adopt: tuple[dict, ...] = ()
    release: tuple[dict, ...] = ()
    create: tuple[dict, ...] = ()
    delete: tuple[str, ...] = ()
    status: dict = field(default_factory=dict)
    event: tuple[str, str, str] | None = None  # (type, reason, message) of a Job that finished now


def _past_backoff_limit_on_failure(spec: dict, active: list[dict]) -> bool:
    """With restartPolicy OnFailure a failing container restarts in its pod, which never fails: the restarts
    of the pending and running pods' containers count against backoffLimit instead (job_controller.go
    pastBackoffLimitOnFailure)."""
    if ((spec.get("template") or {}).get("spec") or {}).get("restartPolicy") != "OnFailure":
        return False
    restarts = sum(c.get("restartCount", 0) for p in active if _phase(p) in ("Pending", "Running")
                   for field in ("initContainerStatuses", "containerStatuses")
                   for c in (p.get("status") or {}).get(field) or [])
    limit = spec.get("backoffLimit", 6)
    return restarts > 0 if limit == 0 else restarts >= limit


def plan(job: dict, pods: Iterable[dict], now: datetime) -> Plan:
    spec = job.get("spec") or {}
    previous = job.get("status") or {}
    candidates = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    claim = ownerrefs.claim(job, ownerrefs.selector_of(job), candidates)
    owned = list(claim.owned)
    active = [p for p in owned if _phase(p) not in ("Succeeded", "Failed")]
    succeeded = max(previous.get("succeeded", 0), sum(1 for p in owned if _phase(p) == "Succeeded"))
    failed = max(previous.get("failed", 0), sum(1 for p in owned if _phase(p) == "Failed"))
    status = {k: v for k, v in previous.items() if k in ("conditions", "startTime", "completionTime")}
    create: list[dict] = []
    delete = [p["metadata"]["name"] for p in active]  # unless the Job is to keep running them
    event = None
    outcome = finished(job)
    completions, parallelism = spec.get("completions"), spec.get("parallelism", 1)
    if outcome is None and not spec.get("suspend"):
        status.setdefault("startTime", _timestamp(now))
        if failed > spec.get("backoffLimit", 6) or _past_backoff_limit_on_failure(spec, active):
            outcome, reason, message = "Failed", FAILED_REASON, FAILED_MESSAGE
            event = (WARNING, reason, message)
            failed += len(active)  # what still runs is deleted, and counts as failed (trackJobStatusAndRemoveFinalizers)
        elif completions is not None and succeeded >= completions or completions is None and succeeded and not active:
            outcome, reason, message = "Complete", COMPLETE_REASON, COMPLETE_MESSAGE
            event = (NORMAL, "Completed", "Job completed")
        else:
            if completions is None:  # a work queue: once one pod has succeeded, what runs finishes, no more start
                wanted = len(active) if succeeded else parallelism
            else:
                wanted = min(parallelism, completions - succeeded)
            delete = [p["metadata"]["name"] for p in active[wanted:]]
            create = [pod_from_template(job) for _ in range(min(max(wanted - len(active), 0), BURST_REPLICAS))]
        if outcome is not None:
            stamp = _timestamp(now)
            status["conditions"] = [*status.get("conditions", []), {
                "type": outcome, "status": "True", "reason": reason, "message": message,
                "lastProbeTime": stamp, "lastTransitionTime": stamp}]
            if outcome == "Complete":
                status["completionTime"] = stamp
    still_active = [p for p in active if p["metadata"]["name"] not in delete]
    counts = {"active": len(still_active) + len(create), "succeeded": succeeded, "failed": failed}
    status.update({k: v for k, v in counts.items() if v})
    status.update(ready=sum(1 for p in still_active if is_ready(p)), terminating=0, uncountedTerminatedPods={})
    return Plan(claim.adopt, claim.release, tuple(create), tuple(delete), status, event)
