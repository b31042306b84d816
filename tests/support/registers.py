"""A history of reads and compare-and-swap writes of single-key registers through the API, and a check that
it is linearizable with the resourceVersion as the order of writes.

Each operation has the time it was invoked and the time its answer came (monotonic clock). A write is
acknowledged (it returned its new resourceVersion), refused (a 409: it did not happen) or of unknown outcome
(a 503 or a timeout: it may have happened). The check, per key:
- acknowledged writes that did not overlap in time got resourceVersions in the same order;
- a read returns a value some write (acknowledged or unknown) stored, at that write's resourceVersion;
- a read is never older than a write acknowledged before it began, nor older than a read that ended
  before it began.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Op:
    kind: str  # "write" or "read"
    key: str
    value: str | None
    version: int | None  # the resourceVersion written or read; None: unknown outcome
    invoked: float
    completed: float
    outcome: str = "ok"  # "ok", "unknown" (writes only)


@dataclass
class History:
    ops: list[Op] = field(default_factory=list)

    def add(self, op: Op) -> None:
        self.ops.append(op)

    def acknowledged_writes(self) -> list[Op]:
        return [op for op in self.ops if op.kind == "write" and op.outcome == "ok"]


def violations(history: History, initial: dict[str, tuple[str, int]]) -> list[str]:
    """Every way the history breaks linearizability; `initial`: key -> (value, version) before it began."""
    found: list[str] = []
    for key in sorted({op.key for op in history.ops}):
        ops = [op for op in history.ops if op.key == key]
        acked = [op for op in ops if op.kind == "write" and op.outcome == "ok"]
        unknown = [op for op in ops if op.kind == "write" and op.outcome == "unknown"]
        reads = [op for op in ops if op.kind == "read"]
        for a in acked:
            for b in acked:
                if a.completed < b.invoked and not a.version < b.version:  # type: ignore[operator]
                    found.append(f"{key}: write {b.value}@{b.version} began after {a.value}@{a.version} was acknowledged")
        stored = {a.version: a.value for a in acked}
        stored[initial[key][1]] = initial[key][0]
        possible = {op.value for op in unknown}
        for r in reads:
            if r.version in stored:
                if stored[r.version] != r.value:
                    found.append(f"{key}: read {r.value}@{r.version}, but {stored[r.version]} was written there")
            elif r.value not in possible:
                found.append(f"{key}: read {r.value}@{r.version}, which no write stored")
            for w in acked:
                if w.completed < r.invoked and r.version < w.version:  # type: ignore[operator]
                    found.append(f"{key}: read @{r.version} began after the write @{w.version} was acknowledged")
            for earlier in reads:
                if earlier.completed < r.invoked and r.version < earlier.version:  # type: ignore[operator]
                    found.append(f"{key}: read @{r.version} began after a read had returned @{earlier.version}")
    return found
