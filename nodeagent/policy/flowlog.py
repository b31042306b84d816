"""The per-node flow log, pure: every verdict the policy hook gives, newest last, in a bounded ring.

The hook judges each new connection once (conntrack carries the verdict for the rest of it), so the log
holds one record per judged connection attempt: when, which way, who to whom on which port, and what
decided it (the allowing policy and rule, or "denied: selected by ... and no rule matched"). Listeners
(`podnet flows -f`) see each record as it is added; counts by direction and verdict feed /metrics.
The clock is the caller's: `add` takes the record's time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .model import DIRECTIONS, Verdict, int_to_ip, ip_to_int

ALLOWED = "allowed"
DENIED = "denied"
VERDICTS = (ALLOWED, DENIED)
DEFAULT_CAPACITY = 8192


@dataclass(frozen=True, slots=True)
class FlowRecord:
    time: float  # seconds since the epoch
    node: str
    direction: str
    protocol: str
    src: str
    src_port: int
    dst: str
    port: int
    allowed: bool
    reason: str
    policy: str | None
    rule: int | None
    src_pod: str | None  # "namespace/name" when the address is a pod's
    dst_pod: str | None

    @property
    def verdict(self) -> str:
        return ALLOWED if self.allowed else DENIED

    def to_dict(self) -> dict:
        return {
            "time": self.time,
            "node": self.node,
            "direction": self.direction,
            "protocol": self.protocol,
            "src": self.src,
            "src_port": self.src_port,
            "dst": self.dst,
            "port": self.port,
            "verdict": self.verdict,
            "reason": self.reason,
            "policy": self.policy,
            "rule": self.rule,
            "src_pod": self.src_pod,
            "dst_pod": self.dst_pod,
        }

    @classmethod
    def from_dict(cls, data: dict) -> FlowRecord:
        """A record as `to_dict` wrote it (what the `flows` RPC sends); raises ValueError otherwise."""
        try:
            return cls(
                time=float(data["time"]),
                node=str(data["node"]),
                direction=str(data["direction"]),
                protocol=str(data["protocol"]),
                src=str(data["src"]),
                src_port=int(data["src_port"]),
                dst=str(data["dst"]),
                port=int(data["port"]),
                allowed=data["verdict"] == ALLOWED,
                reason=str(data["reason"]),
                policy=data.get("policy"),
                rule=data.get("rule"),
                src_pod=data.get("src_pod"),
                dst_pod=data.get("dst_pod"),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a flow record: {e!r}") from e

    def matches(self, verdict: str | None) -> bool:
        return verdict is None or self.verdict == verdict


def record_for(
    now: float,
    node: str,
    direction: str,
    flow: object,
    verdict: Verdict,
    src_pod: str | None,
    dst_pod: str | None,
) -> FlowRecord:
    """The record of one verdict; `flow` has the pipeline's Flow attributes (addresses as text or ints)."""
    src, dst = flow.src_ip, flow.dst_ip
    return FlowRecord(
        time=now,
        node=node,
        direction=str(direction),
        protocol=str(flow.protocol),
        src=src if isinstance(src, str) else int_to_ip(ip_to_int(src)),
        src_port=flow.src_port,
        dst=dst if isinstance(dst, str) else int_to_ip(ip_to_int(dst)),
        port=flow.dst_port,
        allowed=verdict.allowed,
        reason=verdict.reason,
        policy=getattr(verdict, "policy", None),
        rule=getattr(verdict, "rule_index", None),
        src_pod=src_pod,
        dst_pod=dst_pod,
    )


class FlowLog:
    """The last `capacity` verdicts of node `node`, the count of every verdict ever added by direction
    and outcome, and the listeners that want each new record.

    `add` runs once per new connection, so it keeps what it is given as one tuple (the flow and verdict
    objects the pipeline and the evaluator already made) and builds `FlowRecord`s only when they are
    read or someone listens."""

    def __init__(self, node: str, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("a flow log holds at least one record")
        self.node = node
        self._entries: deque[tuple] = deque(maxlen=capacity)
        self._counts: dict[tuple[str, bool], int] = {(d, a): 0 for d in DIRECTIONS for a in (True, False)}
        self._listeners: list[Callable[[FlowRecord], None]] = []

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    @property
    def counts(self) -> dict[tuple[str, str], int]:
        """(direction, "allowed" or "denied") -> verdicts ever added."""
        return {(str(d), ALLOWED if a else DENIED): n for (d, a), n in self._counts.items()}

    def add(
        self,
        now: float,
        direction: str,
        flow: object,
        verdict: Verdict,
        src_pod: str | None = None,
        dst_pod: str | None = None,
    ) -> None:
        entry = (now, direction, flow, verdict, src_pod, dst_pod)
        self._entries.append(entry)
        key = (direction, verdict.allowed)
        self._counts[key] = self._counts.get(key, 0) + 1
        if self._listeners:
            record = self._record(entry)
            for listener in self._listeners:
                listener(record)

    def _record(self, entry: tuple) -> FlowRecord:
        now, direction, flow, verdict, src_pod, dst_pod = entry
        return record_for(now, self.node, direction, flow, verdict, src_pod, dst_pod)

    def records(self, *, verdict: str | None = None, limit: int | None = None) -> list[FlowRecord]:
        """The most recent `limit` records (all when None) with that verdict, oldest first."""
        if verdict is not None and verdict not in VERDICTS:
            raise ValueError(f"verdict must be {ALLOWED!r} or {DENIED!r}, not {verdict!r}")
        wanted = None if verdict is None else verdict == ALLOWED
        chosen = [e for e in self._entries if wanted is None or e[3].allowed == wanted]
        if limit is not None:
            chosen = chosen[-limit:] if limit > 0 else []
        return [self._record(e) for e in chosen]

    def subscribe(self, listener: Callable[[FlowRecord], None]) -> Callable[[], None]:
        """Calls `listener(record)` for every record added from now on; returns the unsubscribe call."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)
