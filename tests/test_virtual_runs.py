"""Which command a Job's virtual pod runs, and the status it then completes with. Pure."""

from __future__ import annotations

import pytest
from podnet.nodeagent.completion import completed
from podnet.nodeagent.kubelet import commands
from podnet.nodeagent.virtualruns import runnable

JOB = [{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u", "controller": True}]


def _pod(command: list[str] | None, args: list[str] | None = None, owners: list[dict] = JOB) -> dict:
    container: dict = {"name": "c", "image": "busybox"}
    if command is not None:
        container["command"] = command
    if args is not None:
        container["args"] = args
    return {"metadata": {"name": "p", "namespace": "d", "ownerReferences": owners},
            "spec": {"restartPolicy": "Never", "containers": [container]}}


@pytest.mark.parametrize("pod, expected", [
    (_pod(["wget", "-qO-", "http://web/"]), commands.Wget),
    (_pod(["/agnhost"], ["connect", "db:5432", "--timeout=1s"]), commands.AgnhostConnect),  # command, then args
    (_pod(["hostname"]), commands.Local),
    (_pod(["sh", "-c", "echo migrated"]), None),  # no shell in a virtual pod: nothing to run
    (_pod(None), None),
    (_pod(["wget", "-qO-", "http://web/"], owners=[]), None),  # not a Job's: a server, not a run
])
def test_a_jobs_virtual_pod_runs_a_command_its_stack_carries_out(pod, expected):
    command = runnable(pod)
    assert (type(command) if command is not None else None) is expected


RUNNING = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
           "containerStatuses": [{"name": "c", "ready": True, "state": {"running": {"startedAt": "t0"}}}]}


@pytest.mark.parametrize("exit_code, phase, reason", [(None, "Running", None), (0, "Succeeded", "Completed"),
                                                      (1, "Failed", "Error")])
def test_a_jobs_virtual_pod_completes_with_its_commands_exit_code(exit_code, phase, reason):
    status = completed(_pod(["wget", "x"]), None, RUNNING, "t1", exit_code)
    assert status["phase"] == phase
    if reason is not None:
        assert status["containerStatuses"][0]["state"] == {
            "terminated": {"exitCode": exit_code, "reason": reason, "startedAt": "t0", "finishedAt": "t1"}}
        assert status["conditions"] == [{"type": "Ready", "status": "False", "reason": "PodCompleted"}]
