"""API priority and fairness, a small form of kube-apiserver's (APF): who may start a request now, pure.

Every authenticated request is classified by the first FlowSchema (lowest matching precedence) whose
subjects name its user or one of its groups. The schema names a PriorityLevel; the flow is the user (APF's
`distinguisherMethod: ByUser`), so one user's flood cannot crowd out another user of the same level.

A level owns a share of the server's concurrency (its seats: `max_requests_inflight` split by
`nominalConcurrencyShares`). A request that finds a free seat runs at once; otherwise it waits in one of
the level's queues: shuffle sharding deals each flow a hand of queues, from which it takes the shortest, and
a freed seat goes to the queues in turn, so a flow that fills its queues waits behind itself while another
flow's request, in another queue, is next. A full queue, or a wait past the adapter's deadline, is a 429.
The exempt level (`system:masters`, the API server's own loopback) is never queued or limited, as on
Kubernetes.

Watches hold no seat (they are long-running, as kube-apiserver's filter treats them); each flow may hold
at most `max_watches_per_user` open, the next is a 429 at once.

No clock, no I/O: the aiohttp adapter (flowcontrol.py) waits, times out and answers.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from podnet.apiserver.auth import AUTHENTICATED_GROUP, MASTERS_GROUP, User
from podnet.apiserver.rbac.defaults import (
    BGP_GROUP,
    CLOUD_LB_GROUP,
    DNS_GROUP,
    INGRESS_GROUP,
    NODES_GROUP,
    PROXIES_GROUP,
    UNAUTHENTICATED,
)

# The namespace the UIDs of the built-in schemas and levels are made in: stable across restarts and servers.
_UID_NAMESPACE = uuid.UUID("6f1c0a52-3a4e-4f49-9d59-2d1f3b9a7c11")


def _uid(kind: str, name: str) -> str:
    return str(uuid.uuid5(_UID_NAMESPACE, f"{kind}/{name}"))


@dataclass(frozen=True, slots=True)
class PriorityLevel:
    name: str
    shares: int  # nominalConcurrencyShares; 0 for the exempt level
    queues: int = 64
    queue_length: int = 50
    hand_size: int = 6

    @property
    def exempt(self) -> bool:
        return self.shares == 0

    @property
    def uid(self) -> str:
        return _uid("prioritylevelconfigurations", self.name)


@dataclass(frozen=True, slots=True)
class FlowSchema:
    name: str
    precedence: int  # matchingPrecedence: the lowest matching schema classifies
    level: str
    groups: tuple[str, ...] = ()  # its subjects: a user in any of these groups

    @property
    def uid(self) -> str:
        return _uid("flowschemas", self.name)

    @property
    def distinguished_by_user(self) -> bool:
        return self.level != "exempt"

    def matches(self, user: User) -> bool:
        return any(g in self.groups for g in user.groups)


# kube-apiserver's bootstrap configuration, the parts podnet has users for: masters exempt, the nodes and the
# cluster's own components in `system`, ServiceAccounts in `workload-low`, everyone else in `global-default`.
LEVELS = (
    PriorityLevel("exempt", 0),
    PriorityLevel("system", 30),
    PriorityLevel("workload-low", 100),
    PriorityLevel("global-default", 20, queues=128, hand_size=6),
)
SCHEMAS = (
    FlowSchema("exempt", 1, "exempt", groups=(MASTERS_GROUP,)),
    FlowSchema("system-nodes", 500, "system", groups=(NODES_GROUP,)),
    FlowSchema("podnet-components", 800, "system",
               groups=(PROXIES_GROUP, BGP_GROUP, DNS_GROUP, CLOUD_LB_GROUP, INGRESS_GROUP)),
    FlowSchema("service-accounts", 9000, "workload-low", groups=("system:serviceaccounts",)),
    FlowSchema("global-default", 9900, "global-default", groups=(AUTHENTICATED_GROUP, UNAUTHENTICATED)),
)
CATCH_ALL = FlowSchema("catch-all", 10000, "global-default", groups=(AUTHENTICATED_GROUP, UNAUTHENTICATED))


@dataclass(frozen=True, slots=True)
class Classification:
    schema: FlowSchema
    level: PriorityLevel
    flow: str  # the user name


def classify(user: User, schemas: Iterable[FlowSchema] = SCHEMAS, levels: Iterable[PriorityLevel] = LEVELS) -> Classification:
    by_name = {level.name: level for level in levels}
    schema = min((s for s in schemas if s.matches(user)), key=lambda s: s.precedence, default=CATCH_ALL)
    return Classification(schema, by_name[schema.level], user.name)


@dataclass(eq=False, slots=True)
class Ticket:
    """One request's place: `admitted` once it holds a seat."""

    classification: Classification
    admitted: bool = False
    queue: int | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a request is refused: `queue-full`, `too-many-watches` (APF's reasons are queue-full, time-out,
    concurrency-limit)."""

    reason: str


@dataclass(slots=True)
class _LevelState:
    seats: int
    in_use: int = 0
    queued: int = 0
    queues: list[deque[Ticket]] = field(default_factory=list)
    next_queue: int = 0  # the queue a freed seat looks at first (round robin)


def deal_hand(flow: str, queues: int, hand_size: int) -> list[int]:
    """The flow's queues: `hand_size` distinct indices from a hash of its name (APF's shuffle sharding)."""
    number = int.from_bytes(hashlib.blake2b(flow.encode(), digest_size=8).digest(), "big")
    hand: list[int] = []
    remaining = list(range(queues))
    for _ in range(min(hand_size, queues)):
        number, pick = divmod(number, len(remaining))
        hand.append(remaining.pop(pick))
    return hand


class Dispatcher:
    """The seats, queues and watch counts of one server."""

    def __init__(self, max_requests_inflight: int, max_watches_per_user: int, levels: Iterable[PriorityLevel] = LEVELS):
        limited = [level for level in levels if not level.exempt]
        total_shares = sum(level.shares for level in limited)
        self._levels = {
            level.name: _LevelState(max(1, math.ceil(max_requests_inflight * level.shares / total_shares)),
                                    queues=[deque() for _ in range(level.queues)])
            for level in limited
        }
        self.max_watches_per_user = max_watches_per_user
        self.watches: dict[str, int] = {}

    def seats(self, level: str) -> int:
        return self._levels[level].seats

    def in_use(self, level: str) -> int:
        return self._levels[level].in_use

    def waiting(self, level: str) -> int:
        return self._levels[level].queued

    def arrive(self, classification: Classification) -> Ticket | Rejected:
        """A request's ticket: admitted at once or queued; or why it is refused."""
        ticket = Ticket(classification)
        level = classification.level
        if level.exempt:
            ticket.admitted = True
            return ticket
        state = self._levels[level.name]
        if state.in_use < state.seats and not state.queued:
            state.in_use += 1
            ticket.admitted = True
            return ticket
        hand = deal_hand(classification.flow, level.queues, level.hand_size)
        shortest = min(hand, key=lambda index: len(state.queues[index]))
        if len(state.queues[shortest]) >= level.queue_length:
            return Rejected("queue-full")
        state.queues[shortest].append(ticket)
        state.queued += 1
        ticket.queue = shortest
        return ticket

    def finish(self, ticket: Ticket) -> list[Ticket]:
        """An admitted request ended: its seat goes to the next queue in turn. Returns the tickets admitted
        by it (to be woken)."""
        level = ticket.classification.level
        if level.exempt or not ticket.admitted:
            return []
        state = self._levels[level.name]
        state.in_use -= 1
        return self._dispatch(state)

    def cancel(self, ticket: Ticket) -> list[Ticket]:
        """A request gives up (its wait timed out, its client left): out of its queue, or its seat freed."""
        if ticket.admitted:
            return self.finish(ticket)
        if ticket.queue is not None:
            state = self._levels[ticket.classification.level.name]
            state.queues[ticket.queue].remove(ticket)
            state.queued -= 1
            ticket.queue = None
        return []

    def _dispatch(self, state: _LevelState) -> list[Ticket]:
        admitted = []
        count = len(state.queues)
        while state.in_use < state.seats:
            for step in range(count):
                index = (state.next_queue + step) % count
                if state.queues[index]:
                    ticket = state.queues[index].popleft()
                    state.queued -= 1
                    ticket.admitted, ticket.queue = True, None
                    state.in_use += 1
                    state.next_queue = (index + 1) % count
                    admitted.append(ticket)
                    break
            else:
                break
        return admitted

    def open_watch(self, classification: Classification) -> Rejected | None:
        """Counts a watch of the flow, or says why it is refused."""
        if classification.level.exempt:
            return None
        open_now = self.watches.get(classification.flow, 0)
        if open_now >= self.max_watches_per_user:
            return Rejected("too-many-watches")
        self.watches[classification.flow] = open_now + 1
        return None

    def close_watch(self, classification: Classification) -> None:
        if classification.level.exempt:
            return
        left = self.watches.get(classification.flow, 0) - 1
        if left > 0:
            self.watches[classification.flow] = left
        else:
            self.watches.pop(classification.flow, None)
