"""Container logs as the kubelet keeps them: the CRI logging format, one file per container instance,
rotated, and the selection `kubectl logs` asks for (`tailLines`, `sinceSeconds`/`sinceTime`,
`timestamps`, `limitBytes`, `previous`). No sockets or event loop here: `follow` is the kubelet
server's, which reads the file again as it grows.

A line of a log file is `<RFC 3339 time with nanoseconds> <stdout|stderr> <F|P> <text>\\n` (P: the text
continues on the next record, a line longer than a write). Instance N of container C of a pod writes
`<pod log dir>/C/N.log`, where N is the container's restart count (as the kubelet names them under
/var/log/pods); past MAX_FILE_BYTES the file is moved to `N.log.1` and a new one begun, so each instance
keeps at most twice that. When instance N starts, instances older than N-1 are removed: the current one
and the last terminated one (`--previous`) remain.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MAX_FILE_BYTES = 4 * 1024 * 1024
# Past this a line is cut into P records, as container runtimes split long writes.
MAX_RECORD_BYTES = 16 * 1024
_INSTANCE = re.compile(r"^(\d+)\.log$")


class LogOptionError(ValueError):
    """A query parameter of `containerLogs` that is not what Kubernetes accepts."""


@dataclass(frozen=True, slots=True)
class Record:
    time: float  # seconds since the epoch
    stream: str  # "stdout" or "stderr"
    text: bytes  # without its newline
    partial: bool = False


@dataclass(frozen=True, slots=True)
class LogOptions:
    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    tail_lines: int | None = None
    since: float | None = None  # seconds since the epoch
    limit_bytes: int | None = None

    @classmethod
    def from_query(cls, query: dict[str, str], now: float) -> LogOptions:
        """The options of a `containerLogs` (or `pods/{name}/log`) query; `now` for `sinceSeconds`."""

        def flag(name: str) -> bool:
            return (query.get(name) or "").lower() in ("true", "1")

        def number(name: str) -> int | None:
            text = query.get(name)
            if text in (None, ""):
                return None
            try:
                value = int(text)
            except ValueError:
                raise LogOptionError(f'{name}: Invalid value: "{text}": must be an integer') from None
            if value < 0 or (value == 0 and name != "tailLines"):
                raise LogOptionError(f"{name}: Invalid value: {value}: must be {'greater than 0' if name != 'tailLines' else 'non-negative'}")
            return value

        since = None
        if (seconds := number("sinceSeconds")) is not None:
            since = now - seconds
        if text := query.get("sinceTime"):
            if seconds is not None:
                raise LogOptionError("at most one of sinceTime or sinceSeconds may be specified")
            try:
                since = parse_time(text)
            except ValueError:
                raise LogOptionError(f'sinceTime: Invalid value: "{text}": must be an RFC 3339 time') from None
        return cls(flag("follow"), flag("previous"), flag("timestamps"), number("tailLines"), since, number("limitBytes"))


def format_time(when: float) -> str:
    """RFC 3339 with nanoseconds in UTC, as the CRI log format and `kubectl logs --timestamps` show it."""
    whole = int(when)
    nanos = int(round((when - whole) * 1e9))
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    stamp = datetime.datetime.fromtimestamp(whole, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z"


def parse_time(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 time (nanoseconds kept to the microsecond)."""
    head, dot, rest = text.rstrip("Z").partition(".")
    fraction = 0.0
    if dot:
        digits = re.match(r"\d*", rest).group(0)
        fraction, rest = float(f"0.{digits or '0'}"), rest[len(digits):]
    moment = datetime.datetime.fromisoformat(head + (rest or "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp() + fraction


def encode(record: Record) -> bytes:
    return b"%s %s %s %s\n" % (format_time(record.time).encode(), record.stream.encode(),
                                b"P" if record.partial else b"F", record.text)


def decode(line: bytes) -> Record | None:
    """One record of a log file (its newline stripped or not); None for a line that is not one."""
    parts = line.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3 or parts[1] not in (b"stdout", b"stderr") or parts[2] not in (b"F", b"P"):
        return None
    try:
        when = parse_time(parts[0].decode())
    except ValueError:
        return None
    return Record(when, parts[1].decode(), parts[3] if len(parts) == 4 else b"", parts[2] == b"P")


def records_of(stream: str, data: bytes, when: float, pending: bytearray) -> list[Record]:
    """The records a program's write of `data` on `stream` makes: one per complete line; what follows
    the last newline waits in `pending` unless it outgrows a record (then it goes as P records)."""
    pending += data
    records = []
    while True:
        end = pending.find(b"\n")
        if end < 0:
            break
        line = bytes(pending[:end])
        del pending[: end + 1]
        while len(line) > MAX_RECORD_BYTES:
            records.append(Record(when, stream, line[:MAX_RECORD_BYTES], True))
            line = line[MAX_RECORD_BYTES:]
        records.append(Record(when, stream, line))
    while len(pending) > MAX_RECORD_BYTES:
        records.append(Record(when, stream, bytes(pending[:MAX_RECORD_BYTES]), True))
        del pending[:MAX_RECORD_BYTES]
    return records


def render(records: Iterable[Record], options: LogOptions) -> bytes:
    """What `kubectl logs` prints of these records under `options` (all but `follow`)."""
    chosen = [r for r in records if options.since is None or r.time >= options.since]
    if options.tail_lines is not None:
        # A line is its P records and the F record that ends it.
        ends = [i for i, r in enumerate(chosen) if not r.partial]
        if options.tail_lines == 0:
            chosen = []
        elif len(ends) > options.tail_lines:
            chosen = chosen[ends[-options.tail_lines - 1] + 1:]
    out = bytearray()
    at_line_start = True
    for record in chosen:
        if options.timestamps and at_line_start:
            out += format_time(record.time).encode() + b" "
        out += record.text
        if not record.partial:
            out += b"\n"
        at_line_start = not record.partial
    if options.limit_bytes is not None:
        del out[options.limit_bytes:]
    return bytes(out)


# ---- files -------------------------------------------------------------------------------------------


def instances(directory: Path) -> list[int]:
    """The container instances whose logs are kept, oldest first."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for name in names if (m := _INSTANCE.match(name)))


def instance_files(directory: Path, instance: int) -> list[Path]:
    """The files of one instance in the order they were written (the rotated one first)."""
    base = directory / f"{instance}.log"
    return [p for p in (base.with_name(base.name + ".1"), base) if p.exists()]


def read_records(paths: Iterable[Path]) -> list[Record]:
    records = []
    for path in paths:
        with open(path, "rb") as f:
            for line in f:
                record = decode(line)
                if record is not None:
                    records.append(record)
    return records


def begin_instance(directory: Path, instance: int) -> Path:
    """Makes room for instance `instance`: older instances than the one before it are removed. Returns
    its log file's path."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in instances(directory):
        if old < instance - 1:
            for path in instance_files(directory, old):
                path.unlink(missing_ok=True)
    return directory / f"{instance}.log"


class LogWriter:
    """Appends records to an instance's file, rotating it past MAX_FILE_BYTES."""

    def __init__(self, path: Path, max_bytes: int = MAX_FILE_BYTES):
        self.path = path
        self.max_bytes = max_bytes
        self._file = open(path, "ab")  # noqa: SIM115 - held open for the container's life

    def write(self, records: Iterable[Record]) -> None:
        data = b"".join(encode(r) for r in records)
        if not data:
            return
        if self._file.tell() + len(data) > self.max_bytes and self._file.tell() > 0:
            self._file.close()
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            self._file = open(self.path, "ab")  # noqa: SIM115
        self._file.write(data)
        self._file.flush()

    def close(self) -> None:
        self._file.close()
