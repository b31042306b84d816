"""Cron schedules as a CronJob's `spec.schedule` means them (robfig/cron v3's standard parser, which the
CronJob controller and kube-apiserver's validation use), pure: a schedule and a time in, the next time out.

A schedule is five fields, minute hour day-of-month month day-of-week, each `*` (or `?`), a number, a range
`a-b`, a step `*/n`, `a-b/n` or `a/n` (a to the field's end), or a comma list of these; months and weekdays
also by their English three-letter names, weekdays 0-6 from Sunday. Or one of the macros `@yearly`
(`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`), `@hourly`, or `@every <duration>`. When
both day fields are restricted a day matches either; when one is `*` the other alone decides.

Times are read in the schedule's time zone (the CronJob's `timeZone`, UTC without one) on the wall clock:
a wall time that a daylight-saving jump skips never fires, one that happens twice fires the first time.
Errors are `CronError`, worded as robfig/cron words them (they reach users in validation messages).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from podnet.api.durations import parse_duration

# How far ahead `next_after` looks before it says a schedule never fires (robfig gives up after 5 years).
SEARCH_YEARS = 5

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {name: number for number, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}
_WEEKDAYS = {name: number for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
# (lowest, highest, names) of each field, in order.
_FIELDS = ((0, 59, {}), (0, 23, {}), (1, 31, {}), (1, 12, _MONTHS), (0, 6, _WEEKDAYS))


class CronError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Schedule:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool  # day-of-month is `*`: the weekday alone decides
    any_weekday: bool  # day-of-week is `*`: the day of the month alone decides
    zone: tzinfo = UTC

    def _day_matches(self, day: datetime) -> bool:
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week

    def next_after(self, when: datetime) -> datetime | None:
        """The first time after `when` (aware) the schedule fires, in UTC; None when it never does."""
        wall = when.astimezone(self.zone).replace(tzinfo=None, second=0, microsecond=0) + timedelta(minutes=1)
        limit = datetime(wall.year + SEARCH_YEARS, 12, 31)
        while wall < limit:
            if wall.month not in self.months:
                wall = (wall.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
            elif not self._day_matches(wall):
                wall = wall.replace(hour=0, minute=0) + timedelta(days=1)
            elif wall.hour not in self.hours:
                wall = wall.replace(minute=0) + timedelta(hours=1)
            elif wall.minute not in self.minutes:
                wall += timedelta(minutes=1)
            else:
                fired = wall.replace(tzinfo=self.zone)
                exists = fired.astimezone(UTC).astimezone(self.zone).replace(tzinfo=None) == wall
                if exists and fired > when:
                    return fired.astimezone(UTC)
                wall += timedelta(minutes=1)
        return None


@dataclass(frozen=True, slots=True)
class Every:
    """`@every <duration>`: a constant delay, at least a second, counted in whole seconds."""

    seconds: int
    zone: tzinfo = UTC  # where its Jobs' scheduled timestamps are written

    def next_after(self, when: datetime) -> datetime | None:
        return (when.replace(microsecond=0) + timedelta(seconds=self.seconds)).astimezone(UTC)


def zone(name: str | None) -> tzinfo:
    """The IANA time zone `name` (UTC for None); CronError `unknown time zone NAME` as Go's LoadLocation."""
    if name is None or name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"unknown time zone {name}") from None


def _number(text: str, spec: str) -> int:
    if not text.isascii() or not text.lstrip("-").isdigit():
        raise CronError(f'failed to parse int from {text}: strconv.Atoi: parsing "{text}": invalid syntax')
    value = int(text)
    if value < 0:
        raise CronError(f"negative number ({value}) not allowed: {spec}")
    return value


def _value(text: str, names: dict[str, int], spec: str) -> int:
    return names[text.lower()] if text.lower() in names else _number(text, spec)


def _field(spec: str, lowest: int, highest: int, names: dict[str, int]) -> tuple[frozenset[int], bool]:
    """The values a field allows, and whether it is `*` (a star with a step of more than one is not)."""
    values: set[int] = set()
    star = False
    for part in spec.split(","):
        range_text, *step_text = part.split("/")
        if len(step_text) > 1:
            raise CronError(f"too many slashes: {part}")
        bounds = range_text.split("-")
        if len(bounds) > 2:
            raise CronError(f"too many hyphens: {part}")
        if bounds[0] in ("*", "?"):
            start, end, star = lowest, highest, True
        else:
            start = _value(bounds[0], names, part)
            end = _value(bounds[1], names, part) if len(bounds) == 2 else start
        step = 1
        if step_text:
            step = _number(step_text[0], part)
            if step <= 0:
                raise CronError(f"step of range should be a positive number: {part}")
            if len(bounds) == 1 and bounds[0] not in ("*", "?"):
                end = highest
            if step > 1:
                star = False
        if start < lowest:
            raise CronError(f"beginning of range ({start}) below minimum ({lowest}): {part}")
        if end > highest:
            raise CronError(f"end of range ({end}) above maximum ({highest}): {part}")
        if start > end:
            raise CronError(f"beginning of range ({start}) beyond end of range ({end}): {part}")
        values.update(range(start, end + 1, step))
    return frozenset(values), star


def parse(spec: str, time_zone: str | None = None) -> Schedule | Every:
    """The schedule `spec` stands for, read in `time_zone` (a `TZ=`/`CRON_TZ=` prefix of the spec wins)."""
    text = spec.strip()
    if not text:
        raise CronError("empty spec string")
    if text.startswith(("TZ=", "CRON_TZ=")):
        prefix, _, text = text.partition(" ")
        time_zone = prefix.split("=", 1)[1]
        text = text.strip()
    location = zone(time_zone)
    if text.startswith("@every "):
        try:
            seconds = parse_duration(text[len("@every "):].strip())
        except ValueError as exc:
            raise CronError(f"failed to parse duration {text}: {exc}") from None
        return Every(max(1, int(seconds)), location)
    if text.startswith("@"):
        if text not in MACROS:
            raise CronError(f"unrecognized descriptor: {text}")
        text = MACROS[text]
    fields = text.split()
    if len(fields) != 5:
        raise CronError(f"expected exactly 5 fields, found {len(fields)}: [{' '.join(fields)}]")
    parsed = [_field(field, *_FIELDS[i]) for i, field in enumerate(fields)]
    (minutes, _), (hours, _), (days, any_day), (months, _), (weekdays, any_weekday) = parsed
    return Schedule(minutes, hours, days, months, weekdays, any_day, any_weekday, location)


def has_zone_prefix(spec: str) -> bool:
    """Whether the spec names its own time zone, which kube-apiserver refuses in favour of `timeZone`."""
    return "TZ=" in spec
