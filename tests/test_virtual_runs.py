"""Which command a virtual pod that runs to completion runs, and the status it then completes with. Pure."""

from __future__ import annotations

import pytest
from podnet.nodeagent.completion import completed, virtual_exit_code
from podnet.nodeagent.kubelet import commands
from podnet.nodeagent.virtualruns import runnable

JOB = [{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u", "controller": True}]


def _pod(command: list[str] | None, args: list[str] | None = None, owners: list[dict] = JOB,
         restart_policy: str = "Never") -> dict:
    container: dict = {"name": "c", "image": "busybox"}
    if command is not None:
        container["command"] = command
    if args is not None:
        container["args"] = args
    return {"metadata": {"name": "p", "namespace": "d", "ownerReferences": owners},
            "spec": {"restartPolicy": restart_policy, "containers": [container]}}


@pytest.mark.parametrize("pod, expected", [
    (_pod(["wget", "-qO-", "http://web/"]), commands.Wget),
    (_pod(["/agnhost"], ["connect", "db:5432", "--timeout=1s"]), commands.AgnhostConnect),  # command, then args
    (_pod(["hostname"]), commands.Local),
    (_pod(["sh", "-c", "echo migrated"]), None),  # no shell in a virtual pod: nothing to run
    (_pod(None), None),
    # Not a Job's: `kubectl run --restart=Never` runs it as well; under Always it is a server, never done.
    (_pod(["wget", "-qO-", "http://web/"], owners=[]), commands.Wget),
    (_pod(["wget", "-qO-", "http://web/"], owners=[], restart_policy="OnFailure"), commands.Wget),
    (_pod(["wget", "-qO-", "http://web/"], owners=[], restart_policy="Always"), None),
    (_pod(["sleep", "3600"], owners=[]), None),  # a client pod to exec into: it keeps running
])
def test_a_virtual_pod_that_may_end_runs_a_command_its_stack_carries_out(pod, expected):
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


@pytest.mark.parametrize("owners, ran, runs, exit_code", [
    (JOB, None, True, None),  # its command still runs
    (JOB, 3, True, 3),
    (JOB, None, False, 0),  # a Job's pod with nothing to run is done at once
    ([], 0, True, 0),
    ([], None, False, None),  # any other pod with nothing to run keeps running
])
def test_a_virtual_pods_exit_code(owners, ran, runs, exit_code):
    assert virtual_exit_code(_pod(["x"], owners=owners), ran, runs) == exit_code
