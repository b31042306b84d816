"""Routing information bases, pure: Adj-RIB-In per peer, and the Loc-RIB's best path per prefix.

Every operation returns the best-path changes it caused, so the speaker installs and re-advertises only
what changed. The clock is a parameter.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from podnet.overlay.bgp import messages as m

LOCAL = ""  # the peer name of routes this speaker originates
DEFAULT_LOCAL_PREF = 100


@dataclass(frozen=True, slots=True)
class PeerInfo:
    address: str
    asn: int
    router_id: str
    ibgp: bool


@dataclass(frozen=True, slots=True)
class Path:
    prefix: m.Prefix
    next_hop: str
    attributes: tuple[m.Attribute, ...]
    peer: str  # the peer's address, or LOCAL
    peer_asn: int
    peer_router_id: str
    ibgp: bool
    learned_at: float
    stale: bool = False

    @property
    def local(self) -> bool:
        return self.peer == LOCAL

    @property
    def as_path(self) -> m.AsPath:
        path = _find(self.attributes, m.AsPath)
        return path if isinstance(path, m.AsPath) else m.AsPath()

    @property
    def local_pref(self) -> int:
        # LOCAL_PREF only means something inside the AS (RFC 4271 5.1.5).
        value = _find(self.attributes, m.LocalPref) if self.ibgp or self.local else None
        return value.value if isinstance(value, m.LocalPref) else DEFAULT_LOCAL_PREF

    @property
    def origin(self) -> m.Origin:
        value = _find(self.attributes, m.OriginAttribute)
        return value.origin if isinstance(value, m.OriginAttribute) else m.Origin.INCOMPLETE

    @property
    def med(self) -> int:
        value = _find(self.attributes, m.MultiExitDisc)
        return value.value if isinstance(value, m.MultiExitDisc) else 0


def _find(attributes: tuple[m.Attribute, ...], kind: type) -> m.Attribute | None:
    for attribute in attributes:
        if isinstance(attribute, kind):
            return attribute
    return None


def _address_key(address: str) -> tuple[int, ...]:
    return tuple(int(part) for part in address.split(".")) if address else ()


def better(a: Path, b: Path) -> bool:
    """Whether `a` is preferred over `b` (RFC 4271 9.1.2.2, the steps podnet needs)."""
    if a.local != b.local:
        return a.local
    if a.local_pref != b.local_pref:
        return a.local_pref > b.local_pref
    if a.as_path.length != b.as_path.length:
        return a.as_path.length < b.as_path.length
    if a.origin != b.origin:
        return a.origin < b.origin
    if a.as_path.first_as == b.as_path.first_as and a.med != b.med:
        return a.med < b.med
    if a.ibgp != b.ibgp:
        return not a.ibgp
    if a.peer_router_id != b.peer_router_id:
        return _address_key(a.peer_router_id) < _address_key(b.peer_router_id)
    return _address_key(a.peer) < _address_key(b.peer)


@dataclass(frozen=True, slots=True)
class BestChanged:
    prefix: m.Prefix
    old: Path | None
    new: Path | None


class Rib:
    def __init__(self, local_asn: int, router_id: str):
        self.local_asn = local_asn
        self.router_id = router_id
        self.adj_in: dict[str, dict[m.Prefix, Path]] = {}
        self.best: dict[m.Prefix, Path] = {}

    def originate(self, prefix: m.Prefix, next_hop: str, now: float) -> list[BestChanged]:
        attributes = (m.OriginAttribute(m.Origin.IGP), m.AsPath(), m.NextHop(next_hop))
        path = Path(prefix, next_hop, attributes, LOCAL, self.local_asn, self.router_id, True, now)
        self.adj_in.setdefault(LOCAL, {})[prefix] = path
        return self._reselect([prefix])

    def stop_originating(self, prefix: m.Prefix) -> list[BestChanged]:
        self.adj_in.get(LOCAL, {}).pop(prefix, None)
        return self._reselect([prefix])

    def receive(self, peer: PeerInfo, announced: Iterable[m.Prefix], attributes: tuple[m.Attribute, ...],
                withdrawn: Iterable[m.Prefix], now: float) -> list[BestChanged]:
        table = self.adj_in.setdefault(peer.address, {})
        touched = []
        for prefix in withdrawn:
            if table.pop(prefix, None) is not None:
                touched.append(prefix)
        announced = list(announced)
        if announced:
            next_hop = _find(attributes, m.NextHop)
            hop = next_hop.address if isinstance(next_hop, m.NextHop) else peer.address
            for prefix in announced:
                table[prefix] = Path(prefix, hop, attributes, peer.address, peer.asn, peer.router_id, peer.ibgp, now)
            touched += announced
        return self._reselect(touched)

    def mark_stale(self, peer: str) -> list[BestChanged]:
        table = self.adj_in.get(peer, {})
        for prefix, path in table.items():
            table[prefix] = replace(path, stale=True)
        return self._reselect(list(table))

    def drop_stale(self, peer: str) -> list[BestChanged]:
        table = self.adj_in.get(peer, {})
        stale = [prefix for prefix, path in table.items() if path.stale]
        for prefix in stale:
            del table[prefix]
        return self._reselect(stale)

    def drop_peer(self, peer: str) -> list[BestChanged]:
        return self._reselect(list(self.adj_in.pop(peer, {})))

    def paths(self) -> Iterable[Path]:
        for table in self.adj_in.values():
            yield from table.values()

    def _reselect(self, prefixes: Iterable[m.Prefix]) -> list[BestChanged]:
        changes = []
        for prefix in dict.fromkeys(prefixes):
            best: Path | None = None
            for table in self.adj_in.values():
                candidate = table.get(prefix)
                if candidate is not None and (best is None or better(candidate, best)):
                    best = candidate
            old = self.best.get(prefix)
            if best is old:
                continue
            if best is None:
                del self.best[prefix]
            else:
                self.best[prefix] = best
            changes.append(BestChanged(prefix, old, best))
        return changes
