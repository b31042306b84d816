"""Connection tracking, pure: the table that makes replies follow their connection.

A flow key is `(protocol, src_ip, src_port, dst_ip, dst_port)` with addresses as 32-bit ints (ICMP echo
uses the identifier as both ports). An entry holds the key of the original direction and the key its
replies carry; the two differ when the connection was DNATted to a service endpoint, and the difference
is what un-NATs the replies. Both keys index the same entry, as in Linux's nf_conntrack.

Time is a parameter (`now`, seconds on any monotonic clock); nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from enum import IntEnum

FlowKey = tuple[int, int, int, int, int]


class Protocol(IntEnum):
    ICMP = 1
    TCP = 6
    UDP = 17


class Direction(IntEnum):
    ORIGINAL = 0
    REPLY = 1


class State(IntEnum):
    NEW = 1  # only the original direction has been seen
    ESTABLISHED = 2  # a reply has been seen
    CLOSING = 3  # FIN seen both ways, or RST


# TCP flag bits as they sit in the header's flags byte.
FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds an idle entry lives, by protocol and state (Linux's nf_conntrack defaults, shortened
    where a model cluster gains nothing from waiting days)."""

    tcp_new: float = 120.0
    tcp_established: float = 86400.0
    tcp_closing: float = 10.0
    udp_new: float = 30.0
    udp_established: float = 120.0
    icmp: float = 30.0

    def for_entry(self, protocol: int, state: State) -> float:
        if protocol == Protocol.TCP:
            if state is State.ESTABLISHED:
                return self.tcp_established
            return self.tcp_closing if state is State.CLOSING else self.tcp_new
        if protocol == Protocol.UDP:
            return self.udp_established if state is State.ESTABLISHED else self.udp_new
        return self.icmp


def reverse(key: FlowKey) -> FlowKey:
    protocol, src, sport, dst, dport = key
    return (protocol, dst, dport, src, sport)


@dataclass(slots=True)
class Entry:
    original: FlowKey
    reply: FlowKey  # the key a reply packet carries: reverse(original) unless NATted
    state: State
    expires: float
    note: str = ""  # what created it (the service a DNAT came from), for trace and flow logs
    fins: int = 0  # bit 0: FIN seen in the original direction, bit 1: in the reply direction
    packets: list[int] = field(default_factory=lambda: [0, 0])
    lifetime: float = 0.0  # seconds an idle entry lives in its current state; changes with `state`
    # Worked out once: every packet of a connection asks it, and both keys are fixed for its life.
    natted: bool = field(init=False)

    def __post_init__(self) -> None:
        self.natted = self.reply != reverse(self.original)


class Conntrack:
    def __init__(self, max_entries: int = 65536, timeouts: Timeouts | None = None):
        self.max_entries = max_entries
        self.timeouts = timeouts or Timeouts()
        self._table: dict[FlowKey, tuple[Entry, Direction]] = {}
        self.dropped_full = 0  # new connections refused because the table was full

    def __len__(self) -> int:
        return len(self._table) // 2

    def lookup(self, key: FlowKey, now: float) -> tuple[Entry, Direction] | None:
        hit = self._table.get(key)
        if hit is None:
            return None
        if hit[0].expires <= now:
            self._remove(hit[0])
            return None
        return hit

    def create(self, original: FlowKey, reply: FlowKey, now: float, note: str = "") -> Entry | None:
        """A new entry, or None (counted) when the table is full or the reply key is taken by another
        connection (two clients NATted onto one endpoint tuple)."""
        if len(self._table) // 2 >= self.max_entries:
            self.expire(now)
            if len(self._table) // 2 >= self.max_entries:
                self.dropped_full += 1
                return None
        if reply in self._table or original in self._table:
            return None
        lifetime = self.timeouts.for_entry(original[0], State.NEW)
        entry = Entry(original, reply, State.NEW, now + lifetime, note, lifetime=lifetime)
        self._table[original] = (entry, Direction.ORIGINAL)
        self._table[reply] = (entry, Direction.REPLY)
        return entry

    def update(self, entry: Entry, direction: Direction, tcp_flags: int, now: float) -> None:
        """Advances the entry's state for one packet and extends its life. Per packet of every tracked
        flow: the common case (no TCP flags, no first reply) only counts and pushes the deadline."""
        entry.packets[direction] += 1
        state = entry.state
        if tcp_flags or (direction is Direction.REPLY and state is State.NEW):
            if direction is Direction.REPLY and state is State.NEW:
                state = State.ESTABLISHED
            if entry.original[0] == Protocol.TCP and tcp_flags:
                if tcp_flags & RST:
                    state = State.CLOSING
                elif tcp_flags & FIN:
                    entry.fins |= 1 << direction
                    if entry.fins == 3:
                        state = State.CLOSING
            if state is not entry.state:
                entry.state = state
                entry.lifetime = self.timeouts.for_entry(entry.original[0], state)
        entry.expires = now + entry.lifetime

    def forget(self, key: FlowKey) -> None:
        """Removes the connection `key` belongs to (say, the one its first packet was refused for)."""
        hit = self._table.get(key)
        if hit is not None:
            self._remove(hit[0])

    def _remove(self, entry: Entry) -> None:
        self._table.pop(entry.original, None)
        self._table.pop(entry.reply, None)

    def expire(self, now: float) -> int:
        """Removes every entry whose time has passed; returns how many."""
        stale = {id(e): e for e, d in self._table.values() if e.expires <= now}
        for entry in stale.values():
            self._remove(entry)
        return len(stale)

    def clear_stale_udp(self, serving: Mapping[tuple[int, int], AbstractSet[int]]) -> int:
        """Removes the UDP entries sent to a service address and port of `serving` whose replies come from
        none of its serving endpoints; returns how many. As kube-proxy does after each sync
        (pkg/proxy/conntrack/cleanup.go): a UDP client that keeps its socket (a resolver retrying)
        would otherwise keep reaching an endpoint that is gone, for as long as it keeps sending."""
        stale = []
        for entry, direction in self._table.values():
            if direction is Direction.ORIGINAL and entry.original[0] == Protocol.UDP:
                endpoints = serving.get((entry.original[3], entry.original[4]))
                if endpoints is not None and entry.reply[1] not in endpoints:
                    stale.append(entry)
        for entry in stale:
            self._remove(entry)
        return len(stale)

    def entries(self) -> list[Entry]:
        return [entry for entry, direction in self._table.values() if direction is Direction.ORIGINAL]
