"""Pods that run to completion, as the kubelet reports them: phase `Succeeded` when every container ended
with 0 and none will start again under the pod's restart policy, `Failed` when one did not end with 0;
their containers `terminated`, the pod no longer Ready (reason PodCompleted).

A netns pod's containers run their programs to completion (nodeagent/pods/netns.py). A virtual pod has no
program of its own: one that a Job controls completes at once, successfully, as a Job's pod whose command
did its work would. Pure: takes the pod object, what the netns pod says and the time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from podnet.nodeagent.pods.netns import NetnsPod


def _controlled_by_job(pod: dict) -> bool:
    return any(ref.get("controller") and ref.get("kind") == "Job"
               for ref in (pod.get("metadata") or {}).get("ownerReferences") or [])


def completed(pod: dict, netns: NetnsPod | None, status: dict, now: str) -> dict:
    """`status` (what the agent reports of a running pod) as it is once the pod has completed; unchanged
    while it has not."""
    if netns is not None:
        phase = netns.phase()
    else:
        phase = "Succeeded" if _controlled_by_job(pod) else None
    if phase is None:
        return status
    containers = []
    for container in status.get("containerStatuses") or []:
        if "terminated" not in (container.get("state") or {}):  # a virtual pod's: done as it started
            started = (container.get("state") or {}).get("running", {}).get("startedAt") or now
            container = {**container, "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                                               "startedAt": started, "finishedAt": now}}}
        containers.append({**container, "ready": False, "started": False})
    conditions = [
        {**c, "status": "False", "reason": "PodCompleted"} if c.get("type") in ("Ready", "ContainersReady") else c
        for c in status.get("conditions") or []
    ]
    return {**status, "phase": phase, "conditions": conditions, "containerStatuses": containers}
