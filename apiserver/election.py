"""Leader election over a `coordination.k8s.io` Lease, as client-go's leaderelection package does it.

Several API servers may run the controllers; exactly one at a time acts. Each candidate reads the Lease,
decides here what (if anything) to write, and writes it with the resourceVersion it read, so that of two
candidates racing for an expired lease only one succeeds.

Expiry is judged by the candidate's own clock from the moment it *saw the record change*, not by the
lease's `renewTime`: machines' clocks differ, and a record that keeps changing is a holder that is alive.
The holder gives up acting once it has failed to renew for `renew_deadline`, which is shorter than the
`lease_duration` the others wait: a deposed leader stops before anyone else can start.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass

LEASE_NAMESPACE = "kube-system"
CONTROLLER_MANAGER_LEASE = "kube-controller-manager"
# client-go's JitterFactor: candidates retry after retry_period * (1 + up to 1.2).
JITTER_FACTOR = 1.2


@dataclass(frozen=True, slots=True)
class Timings:
    """kube-controller-manager's --leader-elect-lease-duration, -renew-deadline and -retry-period."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def validate(self) -> None:
        """Raises ValueError with client-go's reason for timings under which two leaders could act at once."""
        if self.lease_duration <= self.renew_deadline:
            raise ValueError("leaseDuration must be greater than renewDeadline")
        if self.renew_deadline <= JITTER_FACTOR * self.retry_period:
            raise ValueError("renewDeadline must be greater than retryPeriod*JitterFactor")
        if self.retry_period < 0.001:
            raise ValueError("retryPeriod must be greater than zero")


@dataclass(frozen=True, slots=True)
class Record:
    """What a Lease's spec says about its holder."""

    holder: str = ""
    duration_seconds: int = 0
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    @classmethod
    def of(cls, lease: dict) -> Record:
        spec = lease.get("spec") or {}
        return cls(
            holder=spec.get("holderIdentity") or "",
            duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def spec(self) -> dict:
        spec: dict = {"holderIdentity": self.holder, "leaseDurationSeconds": self.duration_seconds,
                      "leaseTransitions": self.transitions}
        if self.acquire_time:
            spec["acquireTime"] = self.acquire_time
        if self.renew_time:
            spec["renewTime"] = self.renew_time
        return spec


@dataclass(frozen=True, slots=True)
class Observation:
    """A record as this candidate last saw it, and when (its own monotonic clock) it last saw it change."""

    record: Record
    changed_at: float


def observe(previous: Observation | None, record: Record, now: float) -> Observation:
    if previous is not None and previous.record == record:
        return previous
    return Observation(record, now)


def micro_time(wall: datetime.datetime) -> str:
    """A MicroTime as the API writes it: RFC 3339 in UTC with six fractional digits."""
    return wall.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def held_by_another(observation: Observation, identity: str, now: float) -> bool:
    """True while someone else holds a lease that has not expired by our clock."""
    record = observation.record
    return bool(record.holder) and record.holder != identity and \
        observation.changed_at + record.duration_seconds > now


def claim(observation: Observation | None, identity: str, now: float, wall: datetime.datetime,
          timings: Timings) -> Record | None:
    """The record to write to acquire or renew the lease (None: another holder's lease is live).
    `observation` is None when the Lease does not exist yet."""
    stamp = micro_time(wall)
    duration = max(1, math.ceil(timings.lease_duration))
    if observation is None:
        return Record(identity, duration, stamp, stamp, 0)
    if held_by_another(observation, identity, now):
        return None
    old = observation.record
    if old.holder == identity:
        return Record(identity, duration, old.acquire_time or stamp, stamp, old.transitions)
    return Record(identity, duration, stamp, stamp, old.transitions + 1)


def release(observation: Observation, identity: str, wall: datetime.datetime) -> Record | None:
    """The record that gives the lease up at once (None: it is not ours to give), as client-go's
    ReleaseOnCancel writes it: no holder, a one-second duration."""
    old = observation.record
    if old.holder != identity:
        return None
    stamp = micro_time(wall)
    return Record("", 1, stamp, stamp, old.transitions)


def deposed(last_renewed: float, now: float, timings: Timings) -> bool:
    """True once the holder has gone `renew_deadline` without a successful renewal: it must stop acting."""
    return now - last_renewed >= timings.renew_deadline
