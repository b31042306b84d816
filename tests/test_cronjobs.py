"""batch/v1 CronJobs through the real kubectl, as against kube-apiserver 1.31: `create cronjob`, its
defaults and columns, `create job --from=cronjob/...`, the schedule and time zone rules. The controller's
timing is tested without a clock in test_cron_schedule.py; test_three_tier.py watches one fire in a cluster."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from podnet.apiserver.controllers import cronjobs
from podnet.apiserver.controllers.cronjobcontroller import CronJobs
from podnet.apiserver.controllers.runner import Settings
from support.apiserver import ApiServerProcess
from support.kubectl import kubectl_server  # noqa: F401  (fixture)
from support.local_cluster import eventually

from podnet.client import Informer

pytestmark = pytest.mark.slow


def _ok(done) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_create_cronjob_defaults_it_and_prints_its_columns(kubectl_server):  # noqa: F811
    k = kubectl_server
    assert _ok(k.kubectl("create", "cronjob", "tick", "--image=busybox", "--schedule=*/5 * * * *", "--", "date")) \
        == "cronjob.batch/tick created\n"
    cronjob = json.loads(_ok(k.kubectl("get", "cj", "tick", "-o", "json")))
    spec = cronjob["spec"]
    assert {key: spec[key] for key in ("concurrencyPolicy", "suspend", "successfulJobsHistoryLimit",
                                       "failedJobsHistoryLimit", "schedule")} == {
        "concurrencyPolicy": "Allow", "suspend": False, "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1,
        "schedule": "*/5 * * * *"}
    assert spec["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"
    assert "backoffLimit" not in spec["jobTemplate"]["spec"]  # each Job defaults its own
    assert cronjob["metadata"]["generation"] == 1
    lines = _ok(k.kubectl("get", "cronjobs", "-o", "wide")).splitlines()
    assert re.split(r"\s{2,}", lines[0].strip()) == ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE",
                                                     "LAST SCHEDULE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
    assert re.match(r"^tick\s+\*/5 \* \* \* \*\s+<none>\s+False\s+0\s+<none>\s+\d+s\s+tick\s+busybox\s+<none>$",
                    lines[1]), lines[1]
    assert "cronjob.batch/tick" in _ok(k.kubectl("get", "all"))


def test_create_job_from_a_cronjob_is_owned_by_it(kubectl_server):  # noqa: F811
    k = kubectl_server
    _ok(k.kubectl("create", "cronjob", "nightly", "--image=busybox", "--schedule=@daily", "--", "echo", "hi"))
    assert _ok(k.kubectl("create", "job", "now", "--from=cronjob/nightly")) == "job.batch/now created\n"
    job = json.loads(_ok(k.kubectl("get", "job", "now", "-o", "json")))
    cronjob = json.loads(_ok(k.kubectl("get", "cronjob", "nightly", "-o", "json")))
    assert job["metadata"]["annotations"] == {"cronjob.kubernetes.io/instantiate": "manual"}
    assert job["metadata"]["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly",
                                                   "uid": cronjob["metadata"]["uid"], "controller": True}]
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["echo", "hi"]


def test_a_time_zone_is_shown_and_suspend_can_be_patched(kubectl_server):  # noqa: F811
    k = kubectl_server
    cronjob = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "berlin"},
               "spec": {"schedule": "0 9 * * MON-FRI", "timeZone": "Europe/Berlin",
                        "jobTemplate": {"spec": {"template": {"spec": {
                            "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}}}
    _ok(k.kubectl("apply", "-f", "-", input=json.dumps(cronjob)))
    _ok(k.kubectl("patch", "cronjob", "berlin", "-p", '{"spec":{"suspend":true}}'))
    row = _ok(k.kubectl("get", "cronjob", "berlin")).splitlines()[1]
    assert re.match(r"^berlin\s+0 9 \* \* MON-FRI\s+Europe/Berlin\s+True\s+0\s+<none>\s+\d+s$", row), row


@pytest.mark.parametrize("schedule, message", [
    ("61 * * * *", 'spec.schedule: Invalid value: "61 * * * *": end of range (61) above maximum (59): 61'),
    ("* * *", 'spec.schedule: Invalid value: "* * *": expected exactly 5 fields, found 3: [* * *]'),
    ("TZ=UTC 0 * * * *", 'spec.schedule: Invalid value: "TZ=UTC 0 * * * *": cannot use TZ or CRON_TZ in schedule, '
                         'use timeZone field instead'),
])
def test_a_bad_schedule_is_refused(kubectl_server, schedule, message):  # noqa: F811
    done = kubectl_server.kubectl("create", "cronjob", "bad", "--image=busybox", f"--schedule={schedule}")
    assert done.returncode == 1
    assert done.stderr == f'error: failed to create cronjob: CronJob.batch "bad" is invalid: {message}\n'


def test_a_bad_cronjob_is_refused_field_by_field(kubectl_server):  # noqa: F811
    cronjob = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "x" * 53},
               "spec": {"schedule": "@hourly", "timeZone": "Mars/Olympus", "concurrencyPolicy": "Sometimes",
                        "startingDeadlineSeconds": -1,
                        "jobTemplate": {"spec": {"template": {"spec": {
                            "restartPolicy": "Always", "containers": [{"name": "c", "image": "busybox"}]}}}}}}
    done = kubectl_server.kubectl("create", "-f", "-", input=json.dumps(cronjob))
    assert done.returncode == 1
    assert done.stderr.splitlines()[1:] == [
        f'* metadata.name: Invalid value: "{"x" * 53}": must be no more than 52 characters',
        '* spec.timeZone: Invalid value: "Mars/Olympus": unknown time zone Mars/Olympus',
        '* spec.concurrencyPolicy: Unsupported value: "Sometimes": supported values: "Allow", "Forbid", "Replace"',
        "* spec.startingDeadlineSeconds: Invalid value: -1: must be greater than or equal to 0",
        '* spec.jobTemplate.spec.template.spec.restartPolicy: Unsupported value: "Always": supported values: '
        '"OnFailure", "Never"',
    ]


async def test_the_controller_runs_a_cronjob_when_its_clock_says_the_time_has_come(tmp_path):
    """The controller's loop against a real API server, on a clock of the test's: no minute is waited for."""
    (tmp_path / "apiserver").mkdir()
    api = ApiServerProcess(tmp_path / "apiserver", f"sqlite:///{tmp_path / 'store.db'}", controllers=False)
    api.start()
    client = api.client()
    informers = {kind: Informer(client, kind) for kind in ("cronjobs", "jobs")}
    controller = CronJobs(client, informers, Settings())
    now = [datetime.now(UTC)]
    controller.clock = lambda: now[0]
    tasks = [asyncio.create_task(i.run()) for i in informers.values()] + [asyncio.create_task(controller.run())]
    try:
        await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
        cronjob = await client.create({
            "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick", "namespace": "default"},
            "spec": {"schedule": "*/5 * * * *", "concurrencyPolicy": "Forbid", "jobTemplate": {"spec": {"template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}}})
        created = cronjobs.parse_time(cronjob["metadata"]["creationTimestamp"])
        first = datetime.fromtimestamp((int(created.timestamp()) // 300 + 1) * 300, UTC)

        async def job_named(name: str) -> dict | None:
            return informers["jobs"].store.get(f"default/{name}")

        async def status_of() -> dict:
            return (await client.get("cronjobs", "tick", "default")).get("status") or {}

        await asyncio.sleep(0.5)
        assert informers["jobs"].store == {}  # the clock says it is not yet time
        now[0] = first + timedelta(seconds=20)
        controller.mark(["default/tick"])
        first_job = await eventually(lambda: job_named(f"tick-{int(first.timestamp()) // 60}"), 10, "the first run")
        assert first_job["metadata"]["ownerReferences"][0]["uid"] == cronjob["metadata"]["uid"]
        status = await eventually(lambda: _when(status_of(), lambda s: s.get("active")), 10, "the run in status")
        assert status["lastScheduleTime"] == cronjobs.format_time(first)
        assert [ref["name"] for ref in status["active"]] == [first_job["metadata"]["name"]]

        # Forbid: the next time comes while the first run is still active; nothing starts.
        now[0] = first + timedelta(minutes=5, seconds=20)
        controller.mark(["default/tick"])
        await asyncio.sleep(1.0)
        assert list(informers["jobs"].store) == [f"default/{first_job['metadata']['name']}"]

        # The first run completes; the time after it starts the next.
        stamp = cronjobs.format_time(first + timedelta(seconds=30))
        await client.replace_status({**first_job, "status": {"startTime": stamp, "completionTime": stamp, "succeeded": 1,
                                                             "conditions": [{"type": "Complete", "status": "True"}]}})
        second = first + timedelta(minutes=10)
        now[0] = second + timedelta(seconds=5)
        controller.mark(["default/tick"])
        await eventually(lambda: job_named(f"tick-{int(second.timestamp()) // 60}"), 10, "the second run")
        status = await eventually(lambda: _when(status_of(), lambda s: s.get("lastSuccessfulTime")), 10, "success")
        assert status["lastSuccessfulTime"] == stamp and status["lastScheduleTime"] == cronjobs.format_time(second)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()
        api.kill()


async def _when(value, check):
    found = await value
    return found if check(found) else None
