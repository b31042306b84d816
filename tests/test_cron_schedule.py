"""Cron schedules and the CronJob controller's decisions, without a clock: times go in, fire times, Jobs,
deletions, status and events come out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from podnet.apiserver.controllers import cronjobs

from podnet.api import cron


def _at(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


def _fires(spec: str, start: str, count: int, time_zone: str | None = None) -> list[str]:
    schedule = cron.parse(spec, time_zone)
    times, when = [], _at(start)
    for _ in range(count):
        when = schedule.next_after(when)
        times.append(when.strftime("%Y-%m-%d %H:%M"))
    return times


@pytest.mark.parametrize("spec, start, expected", [
    ("* * * * *", "2026-12-04 16:50", ["2026-12-04 16:51", "2026-12-04 16:52"]),
    ("*/15 9-17 * * MON-FRI", "2026-12-04 17:40", ["2026-12-04 17:45", "2026-12-07 09:00"]),  # a Friday
    ("0 0 1 jan,JUL *", "2026-03-01 00:00", ["2026-07-01 00:00", "2027-01-01 00:00"]),
    ("5/20 * * * *", "2026-01-01 00:00", ["2026-01-01 00:05", "2026-01-01 00:25"]),
    ("0 12 1-7/3 * *", "2026-01-01 13:00", ["2026-01-04 12:00", "2026-01-07 12:00"]),
    ("0 0 13 * 5", "2026-02-01 00:00", ["2026-02-06 00:00", "2026-02-13 00:00"]),  # day 13 or a Friday
    ("0 0 ? * 0", "2026-02-01 00:00", ["2026-02-08 00:00", "2026-02-15 00:00"]),  # Sundays only
    ("@hourly", "2026-01-01 10:30", ["2026-01-01 11:00", "2026-01-01 12:00"]),
    ("@daily", "2026-01-01 10:30", ["2026-01-02 00:00", "2026-01-03 00:00"]),
    ("@weekly", "2026-01-01 10:30", ["2026-01-04 00:00", "2026-01-11 00:00"]),
    ("@monthly", "2026-01-31 10:30", ["2026-02-01 00:00", "2026-03-01 00:00"]),
    ("@yearly", "2026-06-01 00:00", ["2027-01-01 00:00", "2028-01-01 00:00"]),
    ("0 0 29 2 *", "2026-01-01 00:00", ["2028-02-29 00:00", "2032-02-29 00:00"]),
    ("@every 1h30m", "2026-01-01 00:00", ["2026-01-01 01:30", "2026-01-01 03:00"]),
])
def test_a_schedule_fires_at_its_times(spec, start, expected):
    assert _fires(spec, start, len(expected)) == expected


def test_a_time_zone_reads_the_schedule_on_its_wall_clock():
    # 02:30 in New York does not exist on 2026-03-08 (clocks jump from 2:00 to 3:00): that day has no run.
    assert _fires("30 2 * * *", "2026-03-06 12:00", 3, "America/New_York") == [
        "2026-03-07 07:30", "2026-03-09 06:30", "2026-03-10 06:30"]
    assert _fires("0 9 * * *", "2026-07-01 00:00", 1, "Europe/Berlin") == ["2026-07-01 07:00"]
    # A zone prefix is read (kube-apiserver refuses it on new CronJobs, for `timeZone`).
    assert _fires("CRON_TZ=Asia/Tokyo 0 9 * * *", "2026-07-01 00:00", 1) == ["2026-07-02 00:00"]


def test_a_schedule_that_never_fires_has_no_next_time():
    assert cron.parse("59 23 31 2 *").next_after(_at("2026-01-01 00:00")) is None


@pytest.mark.parametrize("spec, message", [
    ("", "empty spec string"),
    ("* * *", "expected exactly 5 fields, found 3: [* * *]"),
    ("* * * * * *", "expected exactly 5 fields, found 6: [* * * * * *]"),
    ("61 * * * *", "end of range (61) above maximum (59): 61"),
    ("0 0 0 * *", "beginning of range (0) below minimum (1): 0"),
    ("a * * * *", 'failed to parse int from a: strconv.Atoi: parsing "a": invalid syntax'),
    ("*/0 * * * *", "step of range should be a positive number: */0"),
    ("5-1 * * * *", "beginning of range (5) beyond end of range (1): 5-1"),
    ("1-2-3 * * * *", "too many hyphens: 1-2-3"),
    ("1/2/3 * * * *", "too many slashes: 1/2/3"),
    ("* * * * 7", "end of range (7) above maximum (6): 7"),
    ("@fortnightly", "unrecognized descriptor: @fortnightly"),
    ("@every soon", 'failed to parse duration @every soon: time: invalid duration "soon"'),
])
def test_a_malformed_schedule_says_what_is_wrong(spec, message):
    with pytest.raises(cron.CronError) as error:
        cron.parse(spec)
    assert str(error.value) == message


def test_an_unknown_time_zone_is_named():
    with pytest.raises(cron.CronError, match="^unknown time zone Mars/Olympus$"):
        cron.parse("* * * * *", "Mars/Olympus")


# --- the controller's decisions --------------------------------------------------------------------------

UID = "cj-uid"


def _cronjob(schedule: str = "*/5 * * * *", *, created: str = "2026-01-01T10:00:00Z", status: dict | None = None,
             **spec: object) -> dict:
    return {"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "backup", "namespace": "ns", "uid": UID, "creationTimestamp": created},
            "spec": {"schedule": schedule, "concurrencyPolicy": "Allow", "suspend": False,
                     "jobTemplate": {"metadata": {"labels": {"app": "backup"}},
                                     "spec": {"template": {"spec": {"containers": [{"name": "c"}]}}}}, **spec},
            "status": status or {}}


def _job(name: str, uid: str, outcome: str | None = None, start: str = "2026-01-01T10:05:00Z") -> dict:
    status: dict = {"startTime": start}
    if outcome:
        status["conditions"] = [{"type": outcome, "status": "True"}]
        if outcome == "Complete":
            status["completionTime"] = start
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": "ns", "uid": uid,
                         "ownerReferences": [{"kind": "CronJob", "name": "backup", "uid": UID, "controller": True}]},
            "status": status}


def _active(*jobs: dict) -> list[dict]:
    return [cronjobs.job_reference(j) for j in jobs]


def test_nothing_runs_before_the_first_time():
    plan = cronjobs.plan(_cronjob(), [], _at("2026-01-01 10:04"))
    assert plan.create is None and plan.status == {}
    assert plan.wake_at == _at("2026-01-01 10:05")


def test_the_time_that_has_come_makes_its_job():
    plan = cronjobs.plan(_cronjob(timeZone="Europe/Berlin"), [], _at("2026-01-01 10:05") + timedelta(seconds=2))
    minutes = int(_at("2026-01-01 10:05").timestamp()) // 60
    job = plan.create
    assert job["metadata"]["name"] == f"backup-{minutes}"
    assert job["metadata"]["labels"] == {"app": "backup"}
    assert job["metadata"]["annotations"] == {cronjobs.SCHEDULED_TIMESTAMP_ANNOTATION: "2026-01-01T11:05:00+01:00"}
    assert job["metadata"]["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "backup",
                                                   "uid": UID, "controller": True, "blockOwnerDeletion": True}]
    assert job["spec"] == {"template": {"spec": {"containers": [{"name": "c"}]}}}
    assert plan.status == {"lastScheduleTime": "2026-01-01T10:05:00Z"}
    assert plan.wake_at == _at("2026-01-01 10:10")


def test_of_several_missed_times_only_the_latest_runs():
    plan = cronjobs.plan(_cronjob(), [], _at("2026-01-01 10:27"))
    assert plan.create["metadata"]["name"] == f"backup-{int(_at('2026-01-01 10:25').timestamp()) // 60}"
    assert plan.events == ()


def test_a_time_past_the_starting_deadline_is_missed():
    cronjob = _cronjob(startingDeadlineSeconds=30, status={"lastScheduleTime": "2026-01-01T10:00:00Z"})
    plan = cronjobs.plan(cronjob, [], _at("2026-01-01 10:06"))
    assert plan.create is None
    assert plan.events == ()  # the deadline moved the earliest time past 10:05: nothing is due
    plan = cronjobs.plan(_cronjob(startingDeadlineSeconds=200), [], _at("2026-01-01 10:06"))
    assert plan.create is not None


def test_too_many_missed_times_are_reported():
    plan = cronjobs.plan(_cronjob("* * * * *"), [], _at("2026-01-01 12:00"))
    assert plan.create["metadata"]["name"].endswith(str(int(_at("2026-01-01 12:00").timestamp()) // 60))
    assert plan.events[0][:2] == ("Warning", "TooManyMissedTimes")


def test_forbid_skips_a_time_while_a_job_runs():
    running = _job("backup-1", "j1")
    cronjob = _cronjob(concurrencyPolicy="Forbid", status={"active": _active(running),
                                                           "lastScheduleTime": "2026-01-01T10:05:00Z"})
    plan = cronjobs.plan(cronjob, [running], _at("2026-01-01 10:10"))
    assert plan.create is None and plan.delete == ()
    assert plan.events == (("Normal", "JobAlreadyActive", "Not starting job because prior execution is running and "
                                                          "concurrency policy is Forbid"),)


def test_replace_deletes_the_running_job_and_starts_the_next():
    running = _job("backup-1", "j1")
    cronjob = _cronjob(concurrencyPolicy="Replace", status={"active": _active(running),
                                                            "lastScheduleTime": "2026-01-01T10:05:00Z"})
    plan = cronjobs.plan(cronjob, [running], _at("2026-01-01 10:10"))
    assert plan.delete == ("backup-1",) and plan.create is not None
    assert ("Normal", "SuccessfulDelete", "Deleted job backup-1") in plan.events
    assert "active" not in plan.status


def test_allow_runs_beside_the_running_job():
    running = _job("backup-1", "j1")
    cronjob = _cronjob(status={"active": _active(running), "lastScheduleTime": "2026-01-01T10:05:00Z"})
    plan = cronjobs.plan(cronjob, [running], _at("2026-01-01 10:10"))
    assert plan.create is not None and plan.status["active"] == _active(running)


def test_a_suspended_cronjob_starts_nothing():
    assert cronjobs.plan(_cronjob(suspend=True), [], _at("2026-01-01 11:00")).create is None


def test_a_finished_job_leaves_the_active_list_and_dates_the_last_success():
    done = _job("backup-1", "j1", "Complete", start="2026-01-01T10:05:30Z")
    cronjob = _cronjob(status={"active": _active(done), "lastScheduleTime": "2026-01-01T10:05:00Z"})
    plan = cronjobs.plan(cronjob, [done], _at("2026-01-01 10:07"))
    assert plan.status == {"lastScheduleTime": "2026-01-01T10:05:00Z", "lastSuccessfulTime": "2026-01-01T10:05:30Z"}
    assert plan.events == (("Normal", "SawCompletedJob", "Saw completed job: backup-1, condition: Complete"),)


def test_an_active_job_that_is_gone_leaves_the_list():
    gone = _job("backup-1", "j1")
    cronjob = _cronjob(status={"active": _active(gone), "lastScheduleTime": "2026-01-01T10:05:00Z"})
    plan = cronjobs.plan(cronjob, [], _at("2026-01-01 10:07"))
    assert "active" not in plan.status
    assert plan.events == (("Normal", "MissingJob", "Active job went missing: backup-1"),)


def test_the_run_of_a_time_is_made_once():
    minutes = int(_at("2026-01-01 10:05").timestamp()) // 60
    made = _job(f"backup-{minutes}", "j1")
    plan = cronjobs.plan(_cronjob(), [made], _at("2026-01-01 10:06"))  # its status write was lost
    assert plan.create is None
    assert plan.status == {"lastScheduleTime": "2026-01-01T10:05:00Z", "active": _active(made)}


def test_finished_jobs_past_the_history_limits_are_deleted_oldest_first():
    jobs = [_job(f"ok-{i}", f"s{i}", "Complete", start=f"2026-01-01T10:0{i}:00Z") for i in range(5)]
    jobs += [_job(f"bad-{i}", f"f{i}", "Failed", start=f"2026-01-01T10:0{i}:00Z") for i in range(3)]
    plan = cronjobs.plan(_cronjob(successfulJobsHistoryLimit=3, failedJobsHistoryLimit=1,
                                  status={"lastScheduleTime": "2026-01-01T10:05:00Z"}), jobs, _at("2026-01-01 10:06"))
    assert plan.delete == ("ok-0", "ok-1", "bad-0", "bad-1")


def test_jobs_of_another_owner_are_not_counted():
    stranger = _job("other", "x1")
    stranger["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    plan = cronjobs.plan(_cronjob(), [stranger], _at("2026-01-01 10:04"))
    assert plan.events == () and plan.status == {}


def test_an_unparseable_schedule_is_an_event():
    plan = cronjobs.plan(_cronjob("61 * * * *"), [], _at("2026-01-01 10:06"))
    assert plan.create is None
    assert plan.events == (("Warning", "UnparseableSchedule",
                            "unparseable schedule: \"61 * * * *\" : end of range (61) above maximum (59): 61"),)
