"""CronJobs as kube-apiserver validates them (pkg/apis/batch/validation ValidateCronJobCreate/Update).

- The name leaves room for the Jobs' `-<minutes>` suffix: at most 52 characters.
- `schedule` is cron syntax (podnet/api/cron.py words the errors as robfig/cron does) and may not carry its
  own `TZ=`/`CRON_TZ=`: the time zone is `timeZone`, an IANA name, never `Local`.
- `concurrencyPolicy` is Allow, Forbid or Replace; deadlines and history limits are not negative.
- The Job template's selector is generated for each Job, so a template may not set one; its pods restart
  OnFailure or Never, as a Job's.

Pure: functions on plain dicts, reporting through validation.Errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from podnet.api import cron

if TYPE_CHECKING:
    from podnet.apiserver.validation import Errors

MAX_NAME_LENGTH = 52  # validation.DNS1123SubdomainMaxLength less the Jobs' 11-character suffix
CONCURRENCY_POLICIES = ("Allow", "Forbid", "Replace")
_TEMPLATE = "spec.jobTemplate.spec"


def _nonnegative(errors: Errors, field: str, value: object) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        errors.invalid(field, value, "must be greater than or equal to 0")


def _validate_schedule(errors: Errors, spec: dict) -> None:
    schedule = spec.get("schedule")
    if not isinstance(schedule, str) or not schedule:
        errors.required("spec.schedule")
        return
    try:
        cron.parse(schedule)
    except cron.CronError as exc:
        if not str(exc).startswith("unknown time zone"):
            errors.invalid("spec.schedule", schedule, str(exc))
    if cron.has_zone_prefix(schedule):
        errors.invalid("spec.schedule", schedule, "cannot use TZ or CRON_TZ in schedule, use timeZone field instead")


def _validate_time_zone(errors: Errors, time_zone: object) -> None:
    if time_zone is None:
        return
    if not isinstance(time_zone, str) or not time_zone:
        errors.invalid("spec.timeZone", time_zone, "timeZone must be nil or non-empty string")
    elif time_zone.lower() == "local":
        errors.invalid("spec.timeZone", time_zone,
                       "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones")
    else:
        try:
            cron.zone(time_zone)
        except cron.CronError as exc:
            errors.invalid("spec.timeZone", time_zone, str(exc))


def _validate_job_template(errors: Errors, spec: object) -> None:
    from podnet.apiserver.validation import validate_pod_spec  # validation imports this module

    if not isinstance(spec, dict):
        errors.required(_TEMPLATE)
        return
    if spec.get("selector") is not None:
        errors.invalid(f"{_TEMPLATE}.selector", spec["selector"], "`selector` will be auto-generated")
    for field in ("parallelism", "completions", "backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        _nonnegative(errors, f"{_TEMPLATE}.{field}", spec.get(field))
    pod_spec = (spec.get("template") or {}).get("spec")
    validate_pod_spec(errors, f"{_TEMPLATE}.template.spec", pod_spec)
    restart = (pod_spec or {}).get("restartPolicy")
    if restart is not None and restart not in ("OnFailure", "Never"):
        errors.not_supported(f"{_TEMPLATE}.template.spec.restartPolicy", restart, ("OnFailure", "Never"))


def validate_cron_job(errors: Errors, obj: dict, limits: object) -> None:
    name = obj["metadata"].get("name")
    if isinstance(name, str) and len(name) > MAX_NAME_LENGTH:
        errors.invalid("metadata.name", name, f"must be no more than {MAX_NAME_LENGTH} characters")
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errors.required("spec")
        return
    _validate_schedule(errors, spec)
    _validate_time_zone(errors, spec.get("timeZone"))
    policy = spec.get("concurrencyPolicy")
    if not policy:
        errors.required("spec.concurrencyPolicy")
    elif policy not in CONCURRENCY_POLICIES:
        errors.not_supported("spec.concurrencyPolicy", policy, CONCURRENCY_POLICIES)
    for field in ("startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        _nonnegative(errors, f"spec.{field}", spec.get(field))
    _validate_job_template(errors, (spec.get("jobTemplate") or {}).get("spec"))
