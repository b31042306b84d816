"""Pods that run to completion, as the kubelet reports them: phase `Succeeded` when every container ended
with 0 and none will start again under the pod's restart policy, `Failed` when one did not end with 0;
their containers `terminated`, the pod no longer Ready (reason PodCompleted).

A netns pod's containers run their programs to completion (nodeagent/pods/netns.py). A virtual pod has no
program of its own: one that runs a command to completion completes with its exit code
(nodeagent/virtualruns.py); a Job's with none to run completes at once, successfully, as a Job's pod whose
command did its work would. Pure: takes the pod object, what the netns pod says, the virtual pod's exit code
and the time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from podnet.nodeagent.pods.netns import NetnsPod


def controlled_by_job(pod: dict) -> bool:
    return any(ref.get("controller") and ref.get("kind") == "Job"
               for ref in (pod.get("metadata") or {}).get("ownerReferences") or [])


def virtual_exit_code(pod: dict, ran: int | None, runs: bool) -> int | None:
    """A virtual pod's exit code once it has completed, None until then or if it never does: `ran` is its
    command's exit code (None while it runs), `runs` whether it has a command to run."""
    if runs:
        return ran
    return 0 if controlled_by_job(pod) else None


def completed(pod: dict, netns: NetnsPod | None, status: dict, now: str, virtual_exit: int | None = None) -> dict:
    """`status` (what the agent reports of a running pod) as it is once the pod has completed; unchanged
    while it has not. `virtual_exit`: a virtual pod's exit code (`virtual_exit_code`)."""
    if netns is not None:
        phase = netns.phase()
    elif virtual_exit is not None:
        phase = "Succeeded" if virtual_exit == 0 else "Failed"
    else:
        phase = None
    if phase is None:
        return status
    containers = []
    for container in status.get("containerStatuses") or []:
        if "terminated" not in (container.get("state") or {}):  # a virtual pod's: done with its command
            started = (container.get("state") or {}).get("running", {}).get("startedAt") or now
            container = {**container, "state": {"terminated": {
                "exitCode": virtual_exit, "reason": "Completed" if virtual_exit == 0 else "Error",
                "startedAt": started, "finishedAt": now}}}
        containers.append({**container, "ready": False, "started": False})
    conditions = [
        {**c, "status": "False", "reason": "PodCompleted"} if c.get("type") in ("Ready", "ContainersReady") else c
        for c in status.get("conditions") or []
    ]
    return {**status, "phase": phase, "conditions": conditions, "containerStatuses": containers}
