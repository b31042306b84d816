"""The Job controller's decisions, pure: how many pods to create or delete, when a Job is Complete or
Failed, and the status it reports."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from podnet.apiserver.controllers import jobs

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
UID = "job-uid"


def _job(completions: int | None = 3, parallelism: int = 2, backoff_limit: int = 1, **status) -> dict:
    spec = {"parallelism": parallelism, "backoffLimit": backoff_limit,
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": UID}},
            "template": {"metadata": {"labels": {"batch.kubernetes.io/controller-uid": UID}},
                         "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}
    if completions is not None:
        spec["completions"] = completions
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "d", "uid": UID},
            "spec": spec, "status": status}


def _pods(*phases: str) -> list[dict]:
    return [{"metadata": {"name": f"j-{i}", "namespace": "d", "labels": {"batch.kubernetes.io/controller-uid": UID},
                          "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": UID,
                                               "controller": True}]},
             "status": {"phase": phase}} for i, phase in enumerate(phases)]


@pytest.mark.parametrize("job, phases, create, delete, outcome, counts", [
    (_job(), (), 2, 0, None, {"active": 2}),
    (_job(), ("Running", "Succeeded"), 1, 0, None, {"active": 2, "succeeded": 1}),
    (_job(), ("Running", "Succeeded", "Succeeded"), 0, 0, None, {"active": 1, "succeeded": 2}),
    (_job(), ("Running", "Running", "Succeeded", "Succeeded"), 0, 1, None, {"active": 1, "succeeded": 2}),
    (_job(), ("Succeeded",) * 3, 0, 0, "Complete", {"succeeded": 3}),
    (_job(), ("Failed", "Running"), 1, 0, None, {"active": 2, "failed": 1}),
    (_job(), ("Failed", "Failed", "Running"), 0, 1, "Failed", {"failed": 3}),  # what it deletes failed too
    (_job(completions=None), ("Running", "Succeeded"), 0, 0, None, {"active": 1, "succeeded": 1}),
    (_job(completions=None), ("Succeeded", "Succeeded"), 0, 0, "Complete", {"succeeded": 2}),
    (_job(succeeded=3), (), 0, 0, "Complete", {"succeeded": 3}),
])
def test_plan(job, phases, create, delete, outcome, counts):
    plan = jobs.plan(job, _pods(*phases), NOW)
    assert (len(plan.create), len(plan.delete)) == (create, delete)
    conditions = [c["type"] for c in plan.status.get("conditions", [])]
    assert conditions == ([outcome] if outcome else [])
    assert {k: plan.status[k] for k in ("active", "succeeded", "failed") if k in plan.status} == counts
    assert plan.status["startTime"] == "2026-01-01T12:00:00Z"
    if outcome == "Complete":
        assert plan.status["completionTime"] == "2026-01-01T12:00:00Z"
        assert plan.event == ("Normal", "Completed", "Job completed")


def test_created_pods_come_from_the_template_and_are_controlled_by_the_job():
    pod = jobs.plan(_job(), (), NOW).create[0]
    assert pod["metadata"]["generateName"] == "j-"
    assert pod["metadata"]["labels"] == {"batch.kubernetes.io/controller-uid": UID}
    assert pod["metadata"]["ownerReferences"][0]["uid"] == UID and pod["metadata"]["ownerReferences"][0]["controller"]
    assert pod["spec"]["restartPolicy"] == "Never"


def test_a_finished_job_creates_nothing_and_deletes_what_still_runs():
    done = _job(conditions=[{"type": "Failed", "status": "True"}], failed=2)
    plan = jobs.plan(done, _pods("Running"), NOW)
    assert plan.create == () and plan.delete == ("j-0",) and plan.event is None
    assert plan.status["conditions"] == done["status"]["conditions"]


def test_a_suspended_job_runs_no_pods():
    job = _job()
    job["spec"]["suspend"] = True
    plan = jobs.plan(job, _pods("Running"), NOW)
    assert plan.create == () and plan.delete == ("j-0",) and "startTime" not in plan.status


@pytest.mark.parametrize("backoff_limit, restarts, outcome", [
    (2, (1, 0), None),
    (2, (1, 1), "Failed"),  # restarts of all its running pods' containers, summed, reach the limit
    (0, (0, 0), None),
    (0, (1, 0), "Failed"),  # a limit of 0 allows no restart at all
])
def test_on_failure_the_restarts_of_running_containers_count_against_the_backoff_limit(backoff_limit, restarts, outcome):
    job = _job(backoff_limit=backoff_limit)
    job["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    pods = _pods("Running", "Running")
    for pod, count in zip(pods, restarts, strict=True):
        pod["status"]["containerStatuses"] = [{"name": "c", "restartCount": count}]
    plan = jobs.plan(job, pods, NOW)
    assert [c["type"] for c in plan.status.get("conditions", [])] == ([outcome] if outcome else [])
    assert plan.delete == (("j-0", "j-1") if outcome else ())
    if outcome:
        assert plan.status["conditions"][0]["reason"] == "BackoffLimitExceeded"
        assert plan.status["failed"] == 2  # the pods deleted, which never failed themselves
    never = _job(backoff_limit=backoff_limit)  # with Never a pod fails instead, and restarts are not looked at
    assert "conditions" not in jobs.plan(never, pods, NOW).status
