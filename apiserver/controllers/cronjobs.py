"""What a CronJob should do at a given time, pure: as kube-controller-manager's CronJob controller (v2).

- The time to run is the latest time of the schedule that has passed since the CronJob last ran (or was
  created), no earlier than `startingDeadlineSeconds` ago; a time older than that deadline is missed
  (`MissSchedule`), and more than a hundred times missed at once is reported (`TooManyMissedTimes`).
- Each run is a Job named `<cronjob>-<scheduled time in minutes since the epoch>`, from `jobTemplate`, with
  the CronJob as its controller and the scheduled time in its `batch.kubernetes.io/cronjob-scheduled-
  timestamp` annotation (in the CronJob's time zone). That name makes a run happen once: a Job already
  there for the time counts as that run.
- `concurrencyPolicy`: Allow runs regardless; Forbid skips a time while a Job is active
  (`JobAlreadyActive`); Replace deletes the active Jobs first. A suspended CronJob starts nothing.
- `status.active` lists the unfinished Jobs it started, `lastScheduleTime` the time of the last run,
  `lastSuccessfulTime` the completion of the last successful one; finished Jobs beyond
  `successfulJobsHistoryLimit`/`failedJobsHistoryLimit` are deleted, oldest first.

`plan(cronjob, jobs, now)` is all of it; the time it returns in `wake_at` is when to look again.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo

from podnet.api import cron
from podnet.api.events import NORMAL, WARNING

from . import ownerrefs
from .jobs import finished

SCHEDULED_TIMESTAMP_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"
TOO_MANY_MISSED = 100  # the controller's limit of start times it will count


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S").timetuple()), UTC)
    except ValueError:
        return None


def format_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def job_name(cronjob: dict, scheduled: datetime) -> str:
    """getJobName: the CronJob's name and the scheduled time in minutes since the epoch."""
    return f"{cronjob['metadata']['name']}-{int(scheduled.timestamp()) // 60}"


Event = tuple[str, str, str]  # (type, reason, message)


@dataclass(frozen=True, slots=True)
class Plan:
    status: dict
    create: dict | None = None  # the Job to start; its reference joins status.active once made
    delete: tuple[str, ...] = ()  # Jobs to delete (replaced, or past the history limits)
    events: tuple[Event, ...] = ()
    wake_at: datetime | None = None  # the next time the schedule fires


@dataclass
class _Draft:
    status: dict
    events: list[Event] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)


def job_from_template(cronjob: dict, scheduled: datetime, zone: tzinfo) -> dict:
    """getJobFromTemplate2: the template's labels and annotations, the scheduled time, the controller."""
    template = cronjob["spec"].get("jobTemplate") or {}
    template_meta = template.get("metadata") or {}
    annotations = dict(template_meta.get("annotations") or {})
    annotations[SCHEDULED_TIMESTAMP_ANNOTATION] = scheduled.astimezone(zone).isoformat().replace("+00:00", "Z")
    metadata: dict = {"name": job_name(cronjob, scheduled), "namespace": cronjob["metadata"]["namespace"],
                      "annotations": annotations, "ownerReferences": [ownerrefs.new_controller_ref(cronjob)]}
    if template_meta.get("labels"):
        metadata["labels"] = dict(template_meta["labels"])
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": dict(template.get("spec") or {})}


def job_reference(job: dict) -> dict:
    """The ObjectReference status.active keeps of a Job."""
    meta = job["metadata"]
    return {"kind": "Job", "namespace": meta["namespace"], "name": meta["name"], "uid": meta.get("uid", ""),
            "apiVersion": "batch/v1", "resourceVersion": meta.get("resourceVersion", "")}


def _most_recent(schedule: cron.Schedule | cron.Every, earliest: datetime, now: datetime) -> tuple[datetime | None, int]:
    """mostRecentScheduleTime: the latest fire time in (earliest, now], and how many were passed."""
    first = schedule.next_after(earliest)
    if first is None or now < first:
        return None, 0
    second = schedule.next_after(first)
    if second is None or now < second:
        return first, 1
    interval = round((second - first).total_seconds())
    missed = int((now - first).total_seconds()) // interval + 1
    latest = None
    probe = schedule.next_after(datetime.fromtimestamp(first.timestamp() + (missed - 2) * interval, UTC))
    while probe is not None and probe <= now:
        latest, probe = probe, schedule.next_after(probe)
    return latest, missed


def _account_jobs(cronjob: dict, jobs: list[dict], draft: _Draft) -> None:
    """Finished Jobs leave status.active; a Job the list no longer has leaves it too."""
    active = draft.status.get("active") or []
    active_uids = {ref.get("uid") for ref in active}
    present = {job["metadata"].get("uid") for job in jobs}
    for job in jobs:
        meta, outcome = job["metadata"], finished(job)
        if outcome is None:
            if meta.get("uid") not in active_uids:
                draft.events.append((WARNING, "UnexpectedJob", f"Saw a job that the controller did not create or "
                                                               f"forgot: {meta['name']}"))
            continue
        if meta.get("uid") in active_uids:
            active = [ref for ref in active if ref.get("uid") != meta.get("uid")]
            draft.events.append((NORMAL, "SawCompletedJob", f"Saw completed job: {meta['name']}, condition: {outcome}"))
        completed = parse_time((job.get("status") or {}).get("completionTime"))
        last = parse_time(draft.status.get("lastSuccessfulTime"))
        if outcome == "Complete" and completed is not None and (last is None or completed > last):
            draft.status["lastSuccessfulTime"] = format_time(completed)
    for ref in list(active):
        if ref.get("uid") not in present:
            active.remove(ref)
            draft.events.append((NORMAL, "MissingJob", f"Active job went missing: {ref.get('name')}"))
    if active:
        draft.status["active"] = active
    else:
        draft.status.pop("active", None)


def _history(spec: dict, jobs: list[dict]) -> list[str]:
    """The finished Jobs past the history limits, oldest first (by start time, as the controller sorts)."""
    doomed: list[str] = []
    for outcome, limit_field in (("Complete", "successfulJobsHistoryLimit"), ("Failed", "failedJobsHistoryLimit")):
        limit = spec.get(limit_field)
        if limit is None:
            continue
        done = sorted((j for j in jobs if finished(j) == outcome and not j["metadata"].get("deletionTimestamp")),
                      key=lambda j: ((j.get("status") or {}).get("startTime") or "", j["metadata"]["name"]))
        doomed += [j["metadata"]["name"] for j in done[:max(len(done) - limit, 0)]]
    return doomed


def _deleted(names: list[str]) -> list[Event]:
    return [(NORMAL, "SuccessfulDelete", f"Deleted job {name}") for name in names]


def plan(cronjob: dict, jobs: Iterable[dict], now: datetime) -> Plan:
    spec, meta = cronjob.get("spec") or {}, cronjob["metadata"]
    mine = [j for j in jobs if j["metadata"].get("namespace") == meta.get("namespace")
            and ownerrefs.is_controlled_by(j, meta.get("uid"))]
    draft = _Draft(status=dict(cronjob.get("status") or {}))
    _account_jobs(cronjob, mine, draft)
    if meta.get("deletionTimestamp"):
        return Plan(draft.status, events=tuple(draft.events))
    try:
        schedule = cron.parse(spec.get("schedule") or "", spec.get("timeZone"))
    except cron.CronError as exc:
        reason = "UnknownTimeZone" if str(exc).startswith("unknown time zone") else "UnparseableSchedule"
        message = (f'invalid timeZone: "{spec.get("timeZone")}": {exc}' if reason == "UnknownTimeZone"
                   else f'unparseable schedule: "{spec.get("schedule")}" : {exc}')
        return Plan(draft.status, events=(*draft.events, (WARNING, reason, message)))
    history = _history(spec, mine)
    draft.delete += history
    draft.events += _deleted(history)
    wake_at = schedule.next_after(now)
    if spec.get("suspend"):
        return Plan(draft.status, delete=tuple(draft.delete), events=tuple(draft.events), wake_at=wake_at)
    earliest = parse_time(draft.status.get("lastScheduleTime")) or parse_time(meta.get("creationTimestamp")) or now
    deadline = spec.get("startingDeadlineSeconds")
    if deadline is not None:
        earliest = max(earliest, datetime.fromtimestamp(now.timestamp() - deadline, UTC))
    scheduled, missed = _most_recent(schedule, earliest, now)
    if missed > TOO_MANY_MISSED:
        draft.events.append((WARNING, "TooManyMissedTimes", f"too many missed start times: {missed}. Set or decrease "
                                                            ".spec.startingDeadlineSeconds or check clock skew"))
    create = None
    if scheduled is not None:
        create = _run(cronjob, spec, scheduled, now, mine, draft, schedule.zone)
    return Plan(draft.status, create, tuple(dict.fromkeys(draft.delete)), tuple(draft.events), wake_at)


def _run(cronjob: dict, spec: dict, scheduled: datetime, now: datetime, mine: list[dict], draft: _Draft,
         zone: tzinfo) -> dict | None:
    """The Job for `scheduled`, unless it is too late, already there or forbidden; Replace's deletions."""
    deadline = spec.get("startingDeadlineSeconds")
    if deadline is not None and scheduled.timestamp() + deadline < now.timestamp():
        draft.events.append((WARNING, "MissSchedule", "Missed scheduled time to start a job: "
                                                      f"{scheduled.strftime('%a, %d %b %Y %H:%M:%S +0000')}"))
        return None
    name = job_name(cronjob, scheduled)
    existing = next((j for j in mine if j["metadata"]["name"] == name), None)
    if existing is not None:  # this time's run was made: a status write may have been lost since
        draft.status["lastScheduleTime"] = format_time(scheduled)
        active = draft.status.get("active") or []
        if finished(existing) is None and existing["metadata"].get("uid") not in {r.get("uid") for r in active}:
            draft.status["active"] = [*active, job_reference(existing)]
        return None
    active = draft.status.get("active") or []
    policy = spec.get("concurrencyPolicy") or "Allow"
    if policy == "Forbid" and active:
        draft.events.append((NORMAL, "JobAlreadyActive",
                             "Not starting job because prior execution is running and concurrency policy is Forbid"))
        return None
    if policy == "Replace":
        replaced = [ref.get("name") for ref in active]
        draft.delete += replaced
        draft.events += _deleted(replaced)
        draft.status.pop("active", None)
    draft.status["lastScheduleTime"] = format_time(scheduled)
    return job_from_template(cronjob, scheduled, zone)
